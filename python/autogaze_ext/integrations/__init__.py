"""Integrations of gazed video with multimodal LLMs.

``qwen2_5_vl``: Qwen2.5-VL through Hugging Face transformers (``pip install
autogaze_ext[transformers]``). ``qwen_layout`` holds its torch-only geometry (patch order, merge
units, window groups), importable without transformers.
"""

"""autogaze_ext: fast, exact AutoGaze (multi-scale patch selection for video ViTs).

Main entry points: ``AutoGaze.from_pretrained(path)``, ``gaze(frames, model, ...)``,
``preprocess(frames)``, and the native ops in ``autogaze_ext.ops``.
"""

__version__ = "0.1.0"

from .api import gaze
from .config import AutoGazeConfig
from .layout import GazeOutput
from .model import AutoGaze
from .preprocess import ProcessorConfig, preprocess
from .siglip import SparseSiglipVisionModel
from .stream import GazeStream, StreamFrame
from .video import example_clip_path, read_video, synthetic_video


def build_info() -> dict:
    """What the native extension was compiled with (version, CUDA, archs, torch)."""
    from .ops import build_info as _build_info

    return _build_info()


__all__ = ["AutoGaze", "AutoGazeConfig", "GazeOutput", "GazeStream", "ProcessorConfig",
           "SparseSiglipVisionModel", "StreamFrame", "build_info", "example_clip_path", "gaze", "preprocess", "read_video", "synthetic_video"]

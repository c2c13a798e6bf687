"""scripts/gpu_train.sh --dry-run: the GPU training call's whole path (data folder, the stage-1c
training command, the bf16 export) runs on the CPU in two steps, decoding through OpenCV with
PyAV hidden, as on the GPU image (CI runs this)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_ext.video import example_clip_path, synthetic_video, write_video

ROOT = Path(__file__).resolve().parents[1]


def _data(root: Path) -> Path:
    (root / "train_videos").mkdir(parents=True)
    (root / "val_videos").mkdir()
    (root / "still_images").mkdir()
    shutil.copy(example_clip_path(), root / "train_videos" / "example_input.mp4")
    write_video(root / "val_videos" / "val.mp4", synthetic_video(20, 96, 128, seed=3))
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
            root / "still_images" / f"still_{i}.png")
    return root


@pytest.mark.slow
def test_dry_run_trains_and_exports_without_pyav(tmp_path):
    pytest.importorskip("av")  # writes the test clips
    pytest.importorskip("cv2", reason="OpenCV decodes where PyAV is missing")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "av.py").write_text("raise ImportError('no PyAV on the GPU image')\n")
    out = tmp_path / "out"
    env = dict(os.environ, DATA=str(_data(tmp_path / "data")), OUT=str(out), PYTHON=sys.executable,
               PYTHONPATH=str(hide), OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), "--dry-run"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(out / "run" / "checkpoint_latest" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["val_task_loss"] > 0
    # stage 1c's settings, from scripts/onpolicy_args.sh
    algorithm = json.loads((out / "run" / "train_config.json").read_text())["algorithm"]
    assert (algorithm["rollout_fraction"], algorithm["tlp_weight"]) == (0.75, 30)
    assert algorithm["soft_label_temperature"] == 0.05 and algorithm["requirement_max"] == 0.2
    from autogaze_ext import AutoGaze
    exported = AutoGaze.from_pretrained(out / "export")
    trained = AutoGaze.from_pretrained(out / "run" / "checkpoint_latest")
    for (name, a), (_, b) in zip(exported.state_dict().items(), trained.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3), name  # bf16 rounding


def test_bad_use_is_refused(tmp_path):
    script = str(ROOT / "scripts" / "gpu_train.sh")
    env = dict(os.environ, DATA=str(tmp_path / "empty"), PYTHON=sys.executable)
    bad = subprocess.run(["bash", script, "--nope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    missing = subprocess.run(["bash", script, "--dry-run"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "--prepare" in missing.stderr

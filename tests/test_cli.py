"""The ``autogaze`` command line: ``info``, usage errors, and ``gaze`` end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import autogaze_ext
from autogaze_ext.cli import main
from autogaze_ext.video import example_clip_path

MODEL = Path(__file__).parent / "data" / "reference" / "autogaze_model"
PACKAGE_ROOT = Path(autogaze_ext.__file__).resolve().parents[1]

needs_gaze = pytest.mark.skipif(
    not (hasattr(autogaze_ext, "gaze") and hasattr(autogaze_ext, "AutoGaze")),
    reason="autogaze_ext.gaze / AutoGaze not implemented yet")


def require_av():
    pytest.importorskip("av", reason="PyAV not installed (pip install autogaze_ext[video])")


def test_info_prints_json(capsys):
    assert main(["info"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_python_dash_m_runs_info():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "autogaze_ext", "info"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)


def test_no_command_and_help():
    assert main([]) == 2
    assert main(["--help"]) == 0


@pytest.mark.parametrize("args, message", [
    (["gaze", "no/such/video.mp4", "--model", str(MODEL)], "not found"),
    (["gaze", "{clip}", "--model", str(MODEL), "--ratio", "1.5"], "--ratio"),
    (["gaze", "{clip}", "--model", str(MODEL), "--ratio", "0"], "--ratio"),
    (["gaze", "{clip}", "--model", str(MODEL), "--frames", "0"], "--frames"),
    (["gaze", "{clip}", "--model", str(MODEL), "--out", "result.txt"], ".json or .safetensors"),
    (["gaze", "{clip}"], "--model"),
])
def test_usage_errors_exit_2_without_traceback(args, message, capsys, monkeypatch):
    monkeypatch.delenv("AUTOGAZE_MODEL", raising=False)
    args = [a.replace("{clip}", str(example_clip_path())) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_option_type_exits_2(capsys):
    assert main(["gaze", str(example_clip_path()), "--ratio", "lots"]) == 2
    assert "invalid float" in capsys.readouterr().err


@needs_gaze
def test_gaze_writes_json_and_png(tmp_path, capsys):
    require_av()
    out, png = tmp_path / "x.json", tmp_path / "x.png"
    code = main(["gaze", str(example_clip_path()), "--model", str(MODEL), "--frames", "16",
                 "--ratio", "0.1", "--device", "cpu", "--out", str(out), "--png", str(png)])
    assert code == 0, capsys.readouterr().err
    assert "416 of 4240" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert [len(ids) for ids in doc["ids_per_frame"]] == [26] * 16
    assert all(0 <= i < 265 for ids in doc["ids_per_frame"] for i in ids)
    assert doc["num_gazing_each_frame"] == [26] * 16
    assert doc["run"]["ratio"] == 0.1 and doc["run"]["num_frames"] == 16
    from PIL import Image

    with Image.open(png) as sheet:
        assert sheet.format == "PNG"


@needs_gaze
def test_gaze_writes_safetensors(tmp_path, capsys):
    require_av()
    from autogaze_ext.checkpoint import load_safetensors

    out = tmp_path / "x.safetensors"
    code = main(["gaze", str(example_clip_path()), "--model", str(MODEL), "--frames", "4",
                 "--ratio", "0.1", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    tensors = load_safetensors(out)
    assert tensors["frame_offsets"].tolist() == [0, 26, 52, 78, 104]
    assert [tuple(tensors[f"gazing_mask.{i}"].shape) for i in range(4)] == [
        (1, 4, 4), (1, 4, 16), (1, 4, 49), (1, 4, 196)]

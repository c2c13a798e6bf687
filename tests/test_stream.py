"""``GazeStream`` and ``autogaze stream``: frame-by-frame gaze with bounded memory."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autogaze_ext import AutoGaze, gaze
from autogaze_ext.cli import main
from autogaze_ext.stream import GazeStream, latency_summary
from autogaze_ext.video import synthetic_video

from helpers import FIXTURE_MODEL, random_model, small_config

RATIO = 0.05


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(FIXTURE_MODEL)


def offline_ids(out) -> list[list[int]]:
    ids, offsets = out["ids"].tolist(), out["frame_offsets"].tolist()
    return [ids[a:b] for a, b in zip(offsets, offsets[1:])]


@pytest.mark.parametrize("ratio, loss", [(RATIO, None), (0.2, 0.5)])
def test_stream_equals_offline_gaze_of_consecutive_windows(model, ratio, loss):
    frames = synthetic_video(11, 48, 64, seed=3)
    window = 4
    offline = gaze(frames, model, gazing_ratio=ratio, task_loss_requirement=loss, clip_len=window)
    stream = GazeStream(model, gazing_ratio=ratio, task_loss_requirement=loss, window=window)
    results = [stream.push(f) for f in frames]
    assert [r.ids for r in results] == offline_ids(offline)
    assert [r.index for r in results] == list(range(11))
    assert [r.window_index for r in results] == [t % window for t in range(11)]
    # the reset matters: without it, frame 4 sees frames 0..3 and is gazed differently here
    unbounded = GazeStream(model, gazing_ratio=ratio, task_loss_requirement=loss, window=11)
    assert [unbounded.push(f).ids for f in frames] != [r.ids for r in results]
    masks = torch.cat(offline["gazing_mask"], -1)[0]
    for t, r in enumerate(results):
        assert r.per_scale == [int(m[0, t].sum()) for m in offline["gazing_mask"]]
        assert r.count == int(masks[t].sum()) == sum(r.per_scale)
        assert r.kept_percent == pytest.approx(100 * r.count / model.num_tokens)
        assert r.latency_ms > 0
        assert (r.loss is None) == (loss is None)


def test_memory_is_bounded_by_the_window():
    model = random_model(small_config(), seed=2)
    stream = GazeStream(model, gazing_ratio=0.5, window=8)
    frames = synthetic_video(40, 64, 64, seed=4)
    capacity, length = [], []
    for f in frames:
        stream.push(f)
        cache = stream.state.decode.cache
        capacity.append(cache.capacity)
        length.append(cache.length)
    # the KV cache only grows during the first window, then stays the same size
    assert len(set(capacity[7:])) == 1 and capacity[-1] == max(capacity)
    assert max(length) == max(length[:8])  # 8 frames' worth at most
    assert length[8] == length[0] < length[7]  # reset at frame 8
    without_reset = GazeStream(model, gazing_ratio=0.5, window=40)
    for f in frames:
        without_reset.push(f)
    assert without_reset.state.decode.cache.length > 4 * max(length)


def test_stream_frame_to_dict_and_reset(model):
    stream = GazeStream(model, gazing_ratio=RATIO, window=16)
    frame = synthetic_video(1, 40, 40, seed=1)[0]
    first = stream.push(frame)
    second = stream.push(torch.from_numpy(frame))
    stream.reset()
    again = stream.push(frame)
    assert again.ids == first.ids and again.window_index == 0 and again.index == 2
    assert second.window_index == 1
    doc = first.to_dict()
    assert set(doc) == {"index", "window_index", "ids", "per_scale", "kept_percent", "latency_ms",
                        "count"}
    json.dumps(doc)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(window=0), ValueError, "window"),
    (dict(window=2.5), ValueError, "window"),
    (dict(gazing_ratio=1.5), ValueError, "gazing_ratio"),
    (dict(task_loss_requirement=[0.1]), TypeError, "task_loss_requirement"),
])
def test_bad_stream_arguments(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        GazeStream(model, **kwargs)


@pytest.mark.parametrize("frame, error, message", [
    (np.zeros((8, 8), np.uint8), ValueError, r"\(H,W,3\)"),
    (np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    ([[1, 2, 3]], TypeError, "uint8 array"),
])
def test_bad_frames(model, frame, error, message):
    stream = GazeStream(model, gazing_ratio=RATIO)
    with pytest.raises(error, match=message):
        stream.push(frame)
    assert stream.frames_pushed == 0


def test_latency_summary():
    stats = latency_summary([1.0, 2.0, 3.0, 10.0])
    assert stats["frames"] == 4 and stats["mean_ms"] == 4.0 and stats["p50_ms"] == 2.5
    assert 3.0 < stats["p95_ms"] <= stats["max_ms"] == 10.0
    assert latency_summary([]) == {"frames": 0}


# ---- autogaze stream ------------------------------------------------------------------------

class FakeStdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def run_cli(args, capsys, monkeypatch=None, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", FakeStdin(stdin))
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_stdin_raw_frames_equal_offline(model, capsys, monkeypatch):
    frames = synthetic_video(6, 40, 56, seed=7)
    code, out, err = run_cli(["stream", "-", "--size", "56x40", "--model", FIXTURE_MODEL,
                              "--device", "cpu", "--ratio", RATIO, "--window", "4"],
                             capsys, monkeypatch, stdin=frames.tobytes())
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]  # stdout is pure JSONL
    offline = gaze(frames, model, gazing_ratio=RATIO, clip_len=4)
    assert [d["ids"] for d in lines] == offline_ids(offline)
    for d in lines:
        assert d["latency_ms"] > 0 and d["count"] == len(d["ids"]) == sum(d["per_scale"])
    assert "6 frames, window 4 (2 windows)" in err
    assert "latency mean" in err and "p50" in err and "p95" in err


def test_cli_stop_by_paint_equals_offline(capsys, monkeypatch):
    frames = synthetic_video(6, 40, 56, seed=7)
    model = AutoGaze.from_pretrained(FIXTURE_MODEL)
    model.stop_by = "paint"
    offline = gaze(frames, model, gazing_ratio=0.75, task_loss_requirement=0.5, clip_len=4)
    head = gaze(frames, AutoGaze.from_pretrained(FIXTURE_MODEL), gazing_ratio=0.75,
                task_loss_requirement=0.5, clip_len=4)
    assert offline_ids(offline) != offline_ids(head)
    code, out, err = run_cli(["stream", "-", "--size", "56x40", "--model", FIXTURE_MODEL,
                              "--device", "cpu", "--ratio", "0.75", "--loss", "0.5",
                              "--stop-by", "paint", "--window", "4"],
                             capsys, monkeypatch, stdin=frames.tobytes())
    assert code == 0, err
    assert [json.loads(line)["ids"] for line in out.splitlines()] == offline_ids(offline)


def test_cli_video_file_to_jsonl_file(tmp_path, capsys):
    pytest.importorskip("av")
    from autogaze_ext.video import example_clip_path

    out = tmp_path / "gaze.jsonl"
    code, stdout, err = run_cli(["stream", example_clip_path(), "--model", FIXTURE_MODEL,
                                 "--device", "cpu", "--ratio", RATIO, "--max-frames", "3",
                                 "--jsonl", out], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["index"] for d in lines] == [0, 1, 2]
    assert "3 frames, window 16" in stdout and "p95" in stdout and str(out) in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["gaze.jsonl"]


@pytest.mark.parametrize("case, message", [
    ("truncated frame", "stdin ended inside frame 1"),
    ("wrong size", "is --size 50x40 right?"),
    ("empty stdin", "no frame"),
    ("no size", "needs --size"),
    ("tiny size", "smaller than the model's smallest scale"),
    ("bad size", "expected WxH"),
    ("size with file", "--size is for raw frames"),
    ("missing file", "not found"),
    ("bad window", "--window"),
    ("bad ratio", "--ratio"),
])
def test_cli_bad_input_one_line_error(case, message, tmp_path, capsys, monkeypatch):
    frame = synthetic_video(1, 40, 56, seed=1)[0].tobytes()  # one 56x40 frame
    args = ["stream", "-", "--size", "56x40", "--model", FIXTURE_MODEL, "--device", "cpu",
            "--ratio", RATIO, "--jsonl", tmp_path / "out.jsonl"]
    stdin = frame + frame[:100]
    if case == "wrong size":
        args[3] = "50x40"
        stdin = frame
    elif case == "empty stdin":
        stdin = b""
    elif case == "no size":
        del args[2:4]
    elif case == "tiny size":
        args[3] = "30x30"
    elif case == "bad size":
        args[3] = "56by40"
    elif case == "size with file":
        args[1] = tmp_path / "clip.mp4"
        (tmp_path / "clip.mp4").write_bytes(b"x")
    elif case == "missing file":
        args[1:4] = [tmp_path / "nothing.mp4"]
    elif case == "bad window":
        args += ["--window", "0"]
    elif case == "bad ratio":
        args += ["--ratio", "2"]
    code, _, err = run_cli(args, capsys, monkeypatch, stdin=stdin)
    assert code == 2
    assert message in err and "Traceback" not in err
    lines = err.strip().splitlines()
    assert message in lines[-1]
    assert len(lines) == 1 or lines[0].startswith("usage:")  # argparse adds its usage
    assert not [p for p in tmp_path.iterdir() if "jsonl" in p.name]  # nothing half-written


def test_cli_truncated_video_file(tmp_path, capsys):
    pytest.importorskip("av")
    bikes = Path("/work/shared/data/videos/bikes.mp4")
    if not bikes.is_file():
        pytest.skip("bikes.mp4 not available")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(bikes.read_bytes()[:200_000])
    code, _, err = run_cli(["stream", cut, "--model", FIXTURE_MODEL, "--device", "cpu",
                            "--ratio", RATIO, "--jsonl", tmp_path / "o.jsonl"], capsys)
    assert code == 2 and "cannot read video" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()

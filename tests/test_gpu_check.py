"""scripts/gpu_check.sh --dry-run: every stage of the GPU verification runs on the CPU with tiny
sizes and the summary holds every stage with its status, time and figures (CI runs this)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["env", "build", "tests_cuda", "bench", "sanitizer_memcheck", "sanitizer_initcheck",
          "sanitizer_synccheck", "sanitizer_racecheck"]


@pytest.mark.slow
def test_dry_run_writes_a_complete_summary(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == STAGES
    for stage, entry in summary.items():
        assert entry["status"] == "ok", (stage, entry)
        assert 0 < entry["seconds"] <= entry["cap_seconds"]
    assert summary["build"]["figures"]["build_info"]["cuda"] is False
    tests = summary["tests_cuda"]["figures"]
    assert tests["tests"] > 50 and tests["failures"] == tests["errors"] == 0  # all skipped on the CPU
    for stage in STAGES[4:]:
        ops = summary[stage]["figures"]["ops"]
        assert ops and all(entry["cases"] >= 5 and entry["failed"] == 0 for entry in ops.values())
    assert set(summary["sanitizer_memcheck"]["figures"]["ops"]) == {
        "multiscale_patches", "gather_patches", "select_step", "decode_step", "varlen_attention"}
    bench = summary["bench"]["figures"]
    assert bench["tiny"] and bench["rows_error"] == 0 and bench["rows_ok"] >= 20
    assert {t["kind"] for t in bench["targets"]} == {"must", "aim", "target"}
    assert all(isinstance(t["value"], float) and t["met"] is None for t in bench["targets"])
    rows = json.loads((out / "bench.json").read_text())
    native = [r for r in rows["gaze"] if r["backend"] == "native" and r["status"] == "ok"
              and r["dtype"] == "float32"]
    assert native and all(r["exact"] is True and r["vs_ref"] > 0 for r in native)
    assert {r["call"] for r in rows["stream"]} == {"stream_step", "GazeStream.push"}
    with tarfile.open(out / "logs.tar.gz") as logs:
        names = set(logs.getnames())
    assert {f"logs/{stage}.log" for stage in STAGES} <= names
    assert not (out / "logs").exists()  # packed: the device tool brings back at most 8 files

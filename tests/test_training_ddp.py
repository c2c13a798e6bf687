"""A 2-process gloo DDP run of ``python -m autogaze_ext.train`` through torchrun (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch.distributed as dist

from autogaze_ext import AutoGaze
from test_training import TINY_TOML

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.mark.parametrize("algorithm", ["ntp", "grpo"])
def test_two_process_gloo_run(tmp_path, algorithm):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "autogaze_ext.train", str(config), f"run.out={out}",
           f"algorithm.name={algorithm}", "run.steps=2", "run.val_interval=2",
           "optim.grad_accum=2", "run.device=cpu"]
    # own session: on a timeout the whole process group (torchrun and its workers) is killed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "world_size=2" in stdout
    assert sorted(p.name for p in out.glob("metrics*.jsonl")) == ["metrics.jsonl"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert records[-1]["world_size"] == 2 and records[-1]["step"] == 2
    # DDP kept the replicas identical: both ranks end with the same parameters
    hashes = [(out / f"param_hash_rank{r}.txt").read_text() for r in range(2)]
    assert hashes[0] == hashes[1]
    assert (out / "checkpoint_latest" / "rng_rank1.pt").is_file()
    AutoGaze.from_pretrained(out / "checkpoint_latest")

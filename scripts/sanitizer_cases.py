"""A few small cases of each native op, for compute-sanitizer (``scripts/gpu_check.sh``).

    compute-sanitizer --tool memcheck python scripts/sanitizer_cases.py --device cuda
    python scripts/sanitizer_cases.py --device cpu            # the same cases without a GPU

Runs ``tests/fuzz_cases.py``'s variants (random, empty, full, large, extreme; ``--seeds`` of
each) of every op in ``--ops`` on ``--device``, each checked against the reference, with the
device synchronised after every case so a fault is attributed to its case. Writes per-op counts
to ``--out`` (JSON) and exits 1 if any case fails or raises. The sanitizer's own findings go to
its log and exit code. Much smaller than the test files, so each tool finishes in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_cases import OPS, VARIANTS, run_case  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    parser.add_argument("--seeds", type=int, default=2, help="cases per variant and op")
    parser.add_argument("--out", default=None, help="JSON file for the per-op counts")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("sanitizer_cases.py: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    ops = [op for op in args.ops.split(",") if op]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; choose from {list(OPS)}")
    variants = [v for v in VARIANTS if v != "invalid"]  # malformed values trap on CUDA by design
    report, failed = {}, 0
    for op in ops:
        start = time.perf_counter()
        entry = report.setdefault(op, {"cases": 0, "failed": 0, "errors": []})
        for variant in variants:
            for seed in range(args.seeds):
                entry["cases"] += 1
                try:
                    run_case(op, seed, device, variant)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                except Exception as error:  # a mismatch or a CUDA fault: record and go on
                    entry["failed"] += 1
                    entry["errors"].append(f"{variant} seed {seed}: {type(error).__name__}: {error}"[:500])
                    traceback.print_exc()
        entry["seconds"] = round(time.perf_counter() - start, 2)
        failed += entry["failed"]
        print(f"{op}: {entry['cases']} cases, {entry['failed']} failed, {entry['seconds']} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": str(device), "ops": report}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

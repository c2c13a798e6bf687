"""Write ``summary.json`` of a ``scripts/gpu_check.sh`` run: one object, stage -> {status,
seconds, figures}, read from the stage table and the files the stages left in the logs folder.

    python scripts/gpu_summary.py OUT_DIR        # reads OUT_DIR/logs, writes OUT_DIR/summary.json

Exits 1 unless every stage is ok.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TAIL_LINES = 25  # of a failing stage's log, kept in the summary (the logs travel packed)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _status(rc: str, limit: str) -> str:
    if rc == "skipped":
        return "skipped (no time left in the time budget)"
    if rc == "0":
        return "ok"
    if rc in ("124", "137"):
        return f"timeout (cap {limit} s)"
    return f"failed (rc={rc})"


def _junit(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root)
    totals = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    totals["passed"] = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    failing = [f"{case.get('classname')}::{case.get('name')}" for s in suites for case in s.iter("testcase")
               if case.find("failure") is not None or case.find("error") is not None]
    totals["failing"] = failing[:20]
    return totals


def _sanitizer(logs: Path, tool: str) -> dict:
    figures = {}
    log = logs / f"sanitizer_{tool}.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    if found:
        figures["sanitizer_errors"] = int(found[-1])
    cases = _json(logs / f"sanitizer_{tool}.json")
    if cases:
        figures["ops"] = {op: {k: v for k, v in entry.items() if k != "errors"} for op, entry in cases["ops"].items()}
        errors = [f"{op}: {e}" for op, entry in cases["ops"].items() for e in entry["errors"]]
        if errors:
            figures["case_errors"] = errors[:10]
    meta = _json(logs / f"sanitizer_{tool}.meta.json") or {}
    figures.update(meta)
    return figures


def figures_of(stage: str, logs: Path) -> dict:
    if stage == "env":
        return _json(logs / "env.json") or {}
    if stage == "build":
        info = _json(logs / "build_info.json")
        return {"build_info": info} if info else {}
    if stage == "tests_cuda":
        return _junit(logs / "tests_cuda.xml")
    if stage.startswith("sanitizer_"):
        return _sanitizer(logs, stage.removeprefix("sanitizer_"))
    if stage == "bench":
        bench = _json(logs.parent / "bench.json")
        if not bench:
            return {}
        rows = bench["gaze"] + bench["vit"] + bench["stream"]
        count = lambda prefix: sum(r.get("status", "").startswith(prefix) for r in rows)  # noqa: E731
        return {"device": bench["device"], "tiny": bench["tiny"], "targets": bench["targets"],
                "rows_ok": count("ok"), "rows_skipped": count("skipped"), "rows_error": count("error"),
                "bench_seconds": bench["seconds"], "table": "bench.json"}
    return {}


def main(out_dir: str) -> int:
    out = Path(out_dir)
    logs = out / "logs"
    summary = {}
    table = logs / "stages.tsv"
    for line in table.read_text().splitlines() if table.is_file() else []:
        stage, rc, seconds, limit = line.split("\t")
        entry = {"status": _status(rc, limit), "seconds": float(seconds), "cap_seconds": int(limit),
                 "figures": figures_of(stage, logs)}
        if entry["status"] != "ok" and rc != "skipped":
            entry["log_tail"] = _tail(logs / f"{stage}.log")
        summary[stage] = entry
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for stage, entry in summary.items():
        print(f"{stage:22} {entry['status']:40} {entry['seconds']:7.1f} s")
    bench = summary.get("bench", {}).get("figures", {})
    for target in bench.get("targets", []):
        verdict = {True: "met", False: "NOT met",
                   None: "not compared (tiny)" if bench.get("tiny") else "not measured"}[target["met"]]
        print(f"  [{target['kind']}] {target['name']} ({target['dtype']}): {target['value']} vs "
              f"{target['threshold']} -> {verdict} ({target['row']})")
    return 0 if summary and all(entry["status"] == "ok" for entry in summary.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))

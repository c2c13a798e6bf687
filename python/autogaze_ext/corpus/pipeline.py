"""The driver of a corpus run: settings check, probing, planning, the Ray Data pipeline and the
final manifest.

Order of writes (what makes a kill at any point safe): ``corpus.json`` (once), the plan
(``inputs.parquet``, ``units.parquet``, after removing an old ``_SUCCESS.json``), then one shard
or error record per unit from the workers, then ``_SUCCESS.json``. A rerun finds the committed
shards by name and gazes only the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import store
from .inputs import VIDEO_EXTENSIONS, list_inputs, probe
from .units import (FORMAT, CorpusSettings, error_key, model_identity, plan_video,
                    settings_hash)

ROUNDS = 2  # pipeline executions per run: the second one redoes units lost in the first


class CorpusError(ValueError):
    """A corpus run that cannot start (e.g. other settings in the output folder)."""


@dataclass
class Summary:
    """What a run did. Totals (videos, clips, frames, tokens) cover the whole corpus folder's
    plan; ``units_gazed``, ``clips_gazed`` and ``seconds`` cover this run."""

    out: str
    inputs: int = 0
    videos: int = 0
    units: int = 0
    units_done_before: int = 0
    units_gazed: int = 0
    clips: int = 0
    frames: int = 0
    tokens_kept: int = 0
    candidates: int = 0
    clips_gazed: int = 0
    seconds: float = 0.0
    errors: int = 0
    new_errors: int = 0
    stale_shards: int = 0
    workers: int = 0
    nodes: int = 0
    device: str = "cpu"
    wrote: bool = False
    notes: list = field(default_factory=list)

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.tokens_kept / self.candidates if self.candidates else 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips_gazed / self.seconds if self.seconds else 0.0

    def text(self) -> str:
        lines = [
            f"corpus  {self.out}: {self.inputs} inputs, {self.videos} videos, {self.units} units",
            f"clips   {self.clips} ({self.frames} frames); tokens {self.tokens_kept} of "
            f"{self.candidates} kept ({self.kept_percent:.1f}%)",
            f"run     {self.units_gazed} units gazed now, {self.units_done_before} already done"
            + (f"; {self.clips_gazed} clips in {self.seconds:.1f} s = "
               f"{self.clips_per_second:.2f} clips/s on {_count(self.workers, 'worker')} "
               f"({self.device}) on {_count(self.nodes, 'node')}" if self.units_gazed else ""),
            f"errors  {self.errors}" + (f" ({self.new_errors} new)" if self.new_errors else "")
            + (" (see read_errors(DIR) or DIR/errors)" if self.errors else ""),
        ]
        lines += [f"note    {n}" for n in self.notes]
        lines.append(f"wrote   {self.out}/{store.SUCCESS_FILE}" if self.wrote
                     else "wrote   nothing (already complete)")
        return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run(inputs, out, *, model=None, settings: CorpusSettings | None = None, address=None,
        workers: int | None = None, gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0, decode_cpus: float = 1.0, attempts: int = 3,
        retry_errors: bool = False, overwrite: bool = False, extensions=VIDEO_EXTENSIONS,
        progress: bool = True, log=None, worker_resources: dict | None = None) -> Summary:
    """Gaze every clip of every video in ``inputs`` into the corpus folder ``out``.

    inputs: files, folders, globs or manifests (:func:`~.inputs.list_inputs`). model: a
    checkpoint folder or hub id (every node must see the same weights), or None for the
    bundled default model. address: None starts Ray here (unless it is already initialised);
    ``"auto"`` or ``"HOST:PORT"`` joins a cluster. workers: gaze actors (default: one per GPU,
    else half the CPUs); gpus_per_worker: GPUs per actor, fractional allowed (default 1 when
    the cluster has GPUs, else 0: CPU actors). attempts: tries per unit for decoding and for
    gazing before it goes into the errors table. retry_errors: try units with an error record
    again. overwrite: replace a corpus made with other settings in ``out``. worker_resources:
    custom Ray resources each gaze actor needs (e.g. ``{"video_node": 1}`` to keep actors on
    the nodes that advertise it).
    Raises CorpusError (other settings, or a folder that is no corpus) before any work.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    settings = settings or CorpusSettings()
    if not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1; got {attempts!r}")
    out = Path(out).resolve()
    identity, clip_len = _identity_and_check(model, settings)
    hashed = settings.hashed(identity["hash"], clip_len)
    digest = settings_hash(hashed)
    paths = list_inputs(inputs, extensions)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(out=str(out), inputs=len(paths))
    with _locked(out), _RaySession(address) as session:
        _claim_folder(out, hashed, digest, identity, overwrite)
        store.remove_temporaries(out)
        probes = _probe_all(paths, out, retry_errors, progress, session, log)
        units, bad_inputs = _plan(probes, settings, digest, clip_len)
        plan_digest = _plan_digest(units, bad_inputs)
        shards = store.existing_keys(out, "clips")
        errors = store.existing_keys(out, "errors")
        summary.videos, summary.units = len({u["path"] for u in units}), len(units)
        summary.units_done_before = sum(u["key"] in shards for u in units)
        summary.stale_shards = len(shards - {u["key"] for u in units})
        if summary.stale_shards:
            summary.notes.append(f"{summary.stale_shards} shards in {out}/clips belong to no "
                                 "input of this run (changed or left-out files): kept, not in "
                                 "the plan")
        planned = {u["key"] for u in units} | {b["unit"] for b in bad_inputs}
        unfinished = [u for u in units if u["key"] not in shards
                      and (retry_errors or u["key"] not in errors)]
        success = _read_json(out / store.SUCCESS_FILE)
        if (success and success.get("plan_digest") == plan_digest and not unfinished
                and all(b["unit"] in errors for b in bad_inputs)):
            for key in ("videos", "clips", "frames", "tokens_kept", "candidates", "errors"):
                setattr(summary, key, int(success.get(key, 0)))
            return summary  # complete: nothing is written
        if unfinished:  # resources are checked before anything is written
            session.start()
            workers, gpus_per_worker = _resources(workers, gpus_per_worker, cpus_per_worker,
                                                  decode_cpus)
        (out / store.SUCCESS_FILE).unlink(missing_ok=True)
        _write_plan(out, probes, units, bad_inputs, plan_digest)
        for record in bad_inputs:
            if record["unit"] not in errors:
                store.write_error(out, record)
                summary.new_errors += 1
        stats = _gaze_rounds(unfinished, out, identity, settings, digest, hashed, workers,
                             gpus_per_worker, cpus_per_worker, decode_cpus, attempts,
                             progress, summary, log, worker_resources)
        shards = store.existing_keys(out, "clips")
        errors = store.existing_keys(out, "errors")
        for unit in units:  # lost even by the second round: recorded, never silently missing
            if unit["key"] not in shards and unit["key"] not in errors:
                store.write_error(out, store.error_record(
                    unit, "worker: the unit's worker died or its node was lost on every try",
                    attempts, digest))
                errors.add(unit["key"])
                summary.new_errors += 1
        summary.new_errors += sum(1 for s in stats if s["status"] == "error")
        summary.errors = len((planned & errors) - shards)
        _totals(summary, units, shards, stats, out)
        store.write_json(out / store.SUCCESS_FILE, {
            "format": FORMAT, "settings_hash": digest, "plan_digest": plan_digest,
            **{k: v for k, v in asdict(summary).items()
               if k in ("inputs", "videos", "units", "clips", "frames", "tokens_kept",
                        "candidates", "errors")}})
        summary.wrote = True
        store.remove_temporaries(out)
    return summary


# ---- settings and folder --------------------------------------------------------------------

def _identity_and_check(model, settings: CorpusSettings) -> tuple[dict, int]:
    """The model's identity and clip length; options ``gaze()`` would reject fail here."""
    from ..api import _check_target
    from ..model import AutoGaze

    identity = model_identity(model)
    loaded = AutoGaze.from_pretrained(identity["folder"])
    _check_target(loaded, list(settings.target_scales) if settings.target_scales else None,
                  settings.target_patch_size)
    return identity, int(loaded.config.max_num_frames)


@contextlib.contextmanager
def _locked(out: Path):
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"another autogaze corpus run is writing into {out}") from None
        yield


def _claim_folder(out: Path, hashed: dict, digest: str, identity: dict, overwrite: bool) -> None:
    """Write corpus.json into a new folder; refuse a folder of other settings (unless
    ``overwrite``) or one that holds files but no corpus."""
    doc = _read_json(out / store.SETTINGS_FILE)
    if doc is None:
        foreign = [p.name for p in out.iterdir() if p.name not in store.OWN_NAMES]
        if foreign:
            raise CorpusError(f"--out {out} is not empty and holds no corpus "
                              f"({', '.join(sorted(foreign)[:3])}, ...): choose a new folder")
    elif doc.get("settings_hash") != digest:
        if not overwrite:
            old = doc.get("settings", {})
            diff = [f"{k} {old.get(k)!r} -> {hashed.get(k)!r}" for k in sorted(set(old) | set(hashed))
                    if old.get(k) != hashed.get(k)]
            raise CorpusError(f"{out} holds a corpus gazed with other settings "
                              f"({'; '.join(diff) or 'format'}): pass --overwrite to replace it, "
                              "or choose another --out")
        store.clear(out)
        doc = None
    if doc is None:
        store.write_json(out / store.SETTINGS_FILE, {
            "format": FORMAT, "settings": hashed, "settings_hash": digest,
            "model": {k: identity[k] for k in ("ref", "name", "hash")}})


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# ---- ray ------------------------------------------------------------------------------------

class _RaySession:
    """Ray for the run, started on first use: the caller's session when Ray is initialised,
    else joined at ``address`` or started locally (and shut down at the end)."""

    def __init__(self, address):
        self.address, self.started = address, False

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address)
            self.started = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray

            ray.shutdown()


def _remote_args(fn, **args) -> dict:
    """Ray remote options for a Dataset method: passed while the installed Ray accepts them
    (they are deprecated in Ray 2.60), else Ray's defaults (retry without limit) apply."""
    params = inspect.signature(fn).parameters.values()
    return args if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) else {}


@contextlib.contextmanager
def _data_context(progress: bool):
    """Ray Data settings of the corpus stages, restored afterwards (the caller's own datasets
    keep theirs)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = ctx.enable_progress_bars, ctx.max_errored_blocks, logger.level
    ctx.enable_progress_bars = progress
    ctx.max_errored_blocks = -1  # a block that fails for good is redone or recorded by the driver
    if not progress:
        logger.setLevel(logging.WARNING)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved[:2]
        logger.setLevel(saved[2])


# ---- probe and plan -------------------------------------------------------------------------

def _probe_all(paths: list[str], out: Path, retry_errors: bool, progress: bool, session,
               log) -> list[dict]:
    """Probe the inputs as Ray tasks; a file with the size and mtime it had in the previous
    run's inputs.parquet keeps its earlier probe (and content hash)."""
    import os

    table = store.read_table(out / store.INPUTS_FILE)
    previous = {r["path"]: r for r in table.to_pylist()} if table is not None else {}
    cached, todo = [], []
    for path in paths:
        old = previous.get(path)
        try:
            stat = os.stat(path)
        except OSError:
            old = None
        if (old is not None and not (retry_errors and old["error"])
                and (old["size"], old["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)):
            cached.append(old)
        else:
            todo.append(path)
    fresh = []
    if todo:
        import ray.data

        log(f"probe   {len(todo)} files ({len(cached)} unchanged since the last run)")
        session.start()
        with _data_context(progress):
            ds = ray.data.from_items([{"path": p} for p in todo],
                                     override_num_blocks=min(len(todo), 1000))
            fresh = [{k: ([int(x) for x in v] if k.startswith("keyframe") else v)
                      for k, v in row.items()}
                     for row in ds.map(_probe_row).take_all()]
    return sorted(cached + fresh, key=lambda r: r["path"])


def _probe_row(row: dict) -> dict:
    return probe(str(row["path"]))


def _plan(probes: list[dict], settings: CorpusSettings, digest: str, clip_len: int):
    """Work units of the usable videos, and error records of the other inputs."""
    units, bad = [], []
    for video in probes:
        error = video["error"]
        if not error:
            video_units = plan_video(video, settings, digest, clip_len)
            if video_units:
                units += video_units
                continue
            error = (f"no frame selected: the video has {video['num_frames']} frames "
                     f"(frames={settings.frames}, stride={settings.stride}, fps={settings.fps})")
        unit = {"path": video["path"], "content_hash": video["content_hash"],
                "key": error_key(video["path"], video["content_hash"], digest)}
        bad.append(store.error_record(unit, f"probe: {error}", 1, digest))
    return units, bad


def _plan_digest(units, bad) -> str:
    keys = sorted([u["key"] for u in units] + [b["unit"] for b in bad])
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()


def _write_plan(out: Path, probes, units, bad, plan_digest: str) -> None:
    import pyarrow as pa

    inputs = pa.Table.from_pylist(probes, schema=store.INPUT_SCHEMA)
    old = store.read_table(out / store.INPUTS_FILE)
    if old is None or not old.equals(inputs):
        store.write_table(out / store.INPUTS_FILE, inputs)
    rows = [{k: u.get(k) for k in store.UNIT_SCHEMA.names} | {"kind": "unit"} for u in units]
    rows += [{"key": b["unit"], "kind": "input_error", "path": b["path"],
              "content_hash": b["content_hash"], "first_clip": -1, "stop_clip": -1,
              "num_frames": 0, "frame_index": [], "seek_pts": -1, "seek_index": -1} for b in bad]
    store.write_table(out / store.UNITS_FILE, pa.Table.from_pylist(rows, schema=store.UNIT_SCHEMA),
                      {"autogaze.plan_digest": plan_digest})


# ---- gaze -----------------------------------------------------------------------------------

def _resources(workers, gpus_per_worker, cpus_per_worker, decode_cpus) -> tuple[int, float]:
    import ray

    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise CorpusError(f"--gpus-per-worker {gpus_per_worker:g}, but the Ray cluster has "
                          f"{gpus:g} GPUs")
    cpus = float(total.get("CPU", 0))
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, int(gpus // gpus_per_worker))
        else:
            workers = max(1, int(cpus // (2 * cpus_per_worker)))
    if workers * cpus_per_worker + decode_cpus > cpus:
        raise CorpusError(f"{workers} workers of {cpus_per_worker:g} CPUs and decode tasks of "
                          f"{decode_cpus:g} CPUs do not fit the cluster's {cpus:g} CPUs (decoding "
                          "would wait for ever): lower --workers, --cpus-per-worker or "
                          "--decode-cpus")
    return workers, gpus_per_worker


def _gaze_rounds(units, out, identity, settings, digest, hashed, workers, gpus_per_worker,
                 cpus_per_worker, decode_cpus, attempts, progress, summary, log,
                 worker_resources=None) -> list[dict]:
    """Run the pipeline on the unfinished units; again (once) on any the first run lost."""
    if not units:
        return []
    summary.workers, summary.device = workers, "gpu" if gpus_per_worker else "cpu"
    stats, clock = [], time.perf_counter()
    pending = units
    for attempt in range(ROUNDS):
        log(f"gaze    {_count(len(pending), 'unit')} on {_count(workers, 'worker')} ({summary.device})"
            + (" (again: units lost in the first pass)" if attempt else ""))
        try:
            stats += _pipeline(pending, out, identity, settings, digest, hashed, workers,
                               gpus_per_worker, cpus_per_worker, decode_cpus, attempts, progress,
                               worker_resources)
        except Exception as err:  # Ray gave up on the dataset; what was committed stays
            log(f"autogaze: note: the pipeline stopped ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}); redoing what is missing")
        done = store.existing_keys(out, "clips") | store.existing_keys(out, "errors")
        pending = [u for u in pending if u["key"] not in done]
        if not pending:
            break
    summary.seconds = time.perf_counter() - clock
    summary.nodes = len({s["node"] for s in stats})
    summary.units_gazed = sum(1 for s in stats if s["status"] == "done")
    summary.clips_gazed = sum(int(s["clips"]) for s in stats if s["status"] == "done")
    return stats


def _pipeline(units, out, identity, settings, digest, hashed, workers, gpus_per_worker,
              cpus_per_worker, decode_cpus, attempts, progress, worker_resources=None) -> list[dict]:
    """list units → decode (CPU tasks) → gaze and write (actor pool) → status rows."""
    import ray.data

    from .worker import GazeWorker, decode_unit

    with _data_context(progress):
        units_per_call = max(1, settings.batch_size // settings.clips_per_unit)
        ds = ray.data.from_items(units, override_num_blocks=min(len(units), 10_000))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map(decode_unit, fn_kwargs={"attempts": attempts}, num_cpus=decode_cpus,
                        **_remote_args(ds.map, max_retries=3))
            ds = ds.map_batches(
                GazeWorker, batch_size=units_per_call, batch_format="numpy",
                fn_constructor_kwargs={"out": str(out), "identity": identity,
                                       "settings": asdict(settings), "settings_digest": digest,
                                       "hashed": hashed, "attempts": attempts,
                                       "threads": int(max(1, cpus_per_worker)),
                                       "use_gpu": gpus_per_worker > 0},
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker or None,
                **({"resources": dict(worker_resources)} if worker_resources else {}),
                # one actor per node first; restarted on another node when its node is lost
                **_remote_args(ds.map_batches, max_restarts=-1, max_task_retries=3,
                               scheduling_strategy="SPREAD"))
        return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in ds.iter_rows()]


# ---- totals ---------------------------------------------------------------------------------

def _totals(summary: Summary, units, shards, stats, out: Path) -> None:
    """Clips, frames and tokens of every done unit: this run's from the workers, earlier ones
    from their shards' metadata."""
    import pyarrow.parquet as pq

    now = {s["key"]: s for s in stats if s["status"] == "done"}
    for unit in units:
        if unit["key"] not in shards:
            continue
        summary.clips += unit["stop_clip"] - unit["first_clip"]
        summary.frames += unit["num_frames"]
        if unit["key"] in now:
            tokens, candidates = now[unit["key"]]["tokens"], now[unit["key"]]["candidates"]
        else:
            meta = pq.read_metadata(store.shard_path(out, unit["key"])).metadata or {}
            tokens = int(meta.get(b"autogaze.tokens", 0))
            candidates = int(meta.get(b"autogaze.candidates", 0))
        summary.tokens_kept += int(tokens)
        summary.candidates += int(candidates)


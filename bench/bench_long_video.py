"""Scale test (issue 6): a long 4K clip gazed in tile mode with memory bounded by the batch.

A real clip (bikes.mp4, or the bundled example) is upscaled to 3840×2160 and re-encoded (looped
to ``--frames``); the 4K file is then decoded ``16·batch_size`` frames at a time and each chunk is
gazed with ``gaze(chunk, mode="tile")`` (10×18 tiles of 224 px per frame). Only per-frame counts
are kept, so memory depends on the batch size, not the video length. Decode and gaze are timed
separately; peak RSS (``getrusage``) and peak CUDA memory are printed after every chunk.

Run: ``python bench/bench_long_video.py --frames 1000 --device cuda`` (the clip is cached under
``--clip``). On a small CPU use e.g. ``--frames 32`` and compare peak RSS after chunk 1 and 2.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

import autogaze_ext as ag

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "reference" / "autogaze_model"
SOURCES = (Path("/work/shared/data/videos/bikes.mp4"), ag.example_clip_path())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_4k_clip(source: Path, path: Path, frames: int, width: int = 3840,
                 height: int = 2160) -> float:
    """Upscale ``source`` (looped) to ``frames`` frames of width×height in H.264; returns s."""
    import av

    clock = time.perf_counter()
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "20"}
        written = 0
        while written < frames:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    big = frame.reformat(width=width, height=height, format="yuv420p",
                                         interpolation="BICUBIC")
                    big.pts = None
                    out.mux(stream.encode(big))
                    written += 1
                    if written == frames:
                        break
        out.mux(stream.encode())
    tmp.replace(path)
    return time.perf_counter() - clock


def chunks(path: Path, size: int, limit: int):
    """uint8 (≤size, H, W, 3) chunks of the first ``limit`` frames, with each chunk's decode s."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, clock, seen = [], time.perf_counter(), 0
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            seen += 1
            if len(frames) == size or seen == limit:
                yield np.stack(frames), time.perf_counter() - clock
                frames = []
                if seen == limit:
                    return
                clock = time.perf_counter()
        if frames:
            yield np.stack(frames), time.perf_counter() - clock


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ratio", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="16-frame chunks per gaze() call (each has 180 tiles per frame)")
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--clip", type=Path, default=Path("/tmp/autogaze_bench_4k.mp4"),
                        help="the 4K clip (made when missing or shorter than --frames)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--size", default="3840x2160", metavar="WxH",
                        help="frame size of the upscaled clip (default 4K; smaller for quick "
                             "memory-growth checks on a CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = next(p for p in SOURCES if p.is_file())

    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = args.clip.with_name(f"{args.clip.stem}_{args.size}_{args.frames}{args.clip.suffix}")
    if not clip.is_file():
        seconds = make_4k_clip(source, clip, args.frames, width, height)
        print(f"made    {clip} ({args.frames} frames {args.size} from {source.name}) in "
              f"{seconds:.1f} s")
    model = ag.AutoGaze.from_pretrained(args.model, device=args.device)
    cuda = args.device.startswith("cuda")
    span = 16 * args.batch_size
    print(f"bench   {args.frames} frames {args.size}, tile mode, ratio {args.ratio}, batch "
          f"{args.batch_size} ({span} frames per gaze call), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, start RSS {peak_rss_mib():.0f} MiB")
    decode_s = gaze_s = 0.0
    done = tokens = 0
    with torch.no_grad():
        for i, (frames, seconds) in enumerate(chunks(clip, span, args.frames)):
            decode_s += seconds
            clock = time.perf_counter()
            out = ag.gaze(frames, model, gazing_ratio=args.ratio, mode="tile",
                          batch_size=args.batch_size)
            if cuda:
                torch.cuda.synchronize()
            step = time.perf_counter() - clock
            gaze_s += step
            done += len(frames)
            tokens += int(out["ids"].numel())
            candidates = out["num_vision_tokens_each_frame"]
            del out, frames
            gpu = f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
            print(f"chunk {i:3d}  frames {done:5d}  decode {seconds:6.2f} s  gaze {step:7.2f} s  "
                  f"peak RSS {peak_rss_mib():7.0f} MiB{gpu}", flush=True)
    per_frame = (decode_s + gaze_s) / done
    print(f"total   {done} frames: decode {decode_s:.2f} s "
          f"({1000 * decode_s / done:.0f} ms/frame), "
          f"gaze {gaze_s:.2f} s ({1000 * gaze_s / done:.0f} ms/frame), "
          f"{tokens / done:.0f} of {candidates} tokens kept per frame")
    print(f"peak    RSS {peak_rss_mib():.0f} MiB"
          + (f", CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""))
    print(f"project 1000 frames: {1000 * per_frame:.0f} s ({1000 * per_frame / 60:.1f} min) at "
          f"{per_frame:.2f} s/frame, same peak memory (bounded by --batch-size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

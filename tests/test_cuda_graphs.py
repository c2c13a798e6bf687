"""Whole-clip CUDA graphs: replaying a captured clip equals eager generation (CUDA only), and
the flag is harmless elsewhere."""

from __future__ import annotations

import pytest
import torch

from autogaze_ext.graphs import ClipGraph, GraphCache
from helpers import random_model, random_video, small_config


def test_flag_is_eager_on_cpu():
    model = random_model(small_config(), seed=1)
    video = random_video(2, 3, 64, seed=2)
    eager = model(video, gazing_ratio=0.4)
    flagged = model(video, gazing_ratio=0.4, cuda_graph=True)
    assert torch.equal(eager["ids"], flagged["ids"]) and len(model.cuda_graphs) == 0


def test_clip_graph_rejects_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA"):
        ClipGraph(lambda v, r: ([], []), torch.zeros(1, 1, 3, 64, 64), None)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("requirement", [None, 0.1])
def test_replay_equals_eager(backend, requirement):
    model = random_model(small_config(), seed=3).cuda()
    clips = [random_video(4, 5, 64, seed=s).cuda() for s in (4, 5)]
    for clip in clips:  # the second clip replays the graph captured with the first
        eager = model(clip, gazing_ratio=0.5, task_loss_requirement=requirement, backend=backend)
        graphed = model(clip, gazing_ratio=0.5, task_loss_requirement=requirement,
                        backend=backend, cuda_graph=True)
        for field in ("ids", "frame_offsets", "gazing_pos", "if_padded_gazing"):
            assert torch.equal(eager[field], graphed[field]), field
    assert len(model.cuda_graphs) == 1


@pytest.mark.cuda
def test_new_weights_get_a_new_graph():
    model = random_model(small_config(), seed=6).cuda()
    clip = random_video(2, 3, 64, seed=7).cuda()
    model(clip, gazing_ratio=0.5, cuda_graph=True)
    model.to(torch.bfloat16)
    model(clip.bfloat16(), gazing_ratio=0.5, cuda_graph=True)
    assert len(model.cuda_graphs) == 2


def test_graph_cache_captures_once_per_key_and_drops_the_least_recent(monkeypatch):
    captured = []

    class FakeGraph:
        def __init__(self, program, video, requirement):
            captured.append(program)
            self.program = program

        def __call__(self, video, requirement):
            return self.program(video, requirement)

    monkeypatch.setattr("autogaze_ext.graphs.ClipGraph", FakeGraph)
    cache = GraphCache(max_graphs=2)
    for key in "abab":
        assert cache.run(key, lambda v, r, key=key: ([key], []), None, None) == ([key], [])
    assert len(captured) == 2
    cache.run("c", lambda v, r: ([], []), None, None)   # drops "a", the least recently used
    assert [key for key, _ in cache.graphs] == ["b", "c"]
    cache.run("a", lambda v, r: ([], []), None, None)
    assert len(captured) == 4


class FakeGraph:
    """Stands for ClipGraph on the CPU: runs the program eagerly, counts captures."""
    captures = 0

    def __init__(self, program, video, requirement):
        FakeGraph.captures += 1
        self.program = program

    def __call__(self, video, requirement):
        return self.program(video, requirement)


@pytest.fixture
def fake_graphs(monkeypatch):
    FakeGraph.captures = 0
    monkeypatch.setattr("autogaze_ext.graphs.ClipGraph", FakeGraph)
    return FakeGraph


def test_graph_tensors_cover_the_rope_buffer():
    model = random_model(small_config(), seed=1)
    ptrs = {t.data_ptr() for t in model.graph_tensors()}
    assert model.gazing_model.gaze_decoder.inv_freq.data_ptr() in ptrs
    assert len(model.graph_tensors()) == len(list(model.parameters())) + len(list(model.buffers()))


def test_a_recreated_buffer_gets_a_new_graph(fake_graphs):
    """A graph reads inv_freq by address: a new inv_freq tensor must not replay the old graph."""
    model = random_model(small_config(), seed=1)
    decoder = model.gazing_model.gaze_decoder
    program = lambda v, r: ([], [])  # noqa: E731
    model.cuda_graphs.run("clip", program, None, None, model.graph_tensors())
    model.cuda_graphs.run("clip", program, None, None, model.graph_tensors())
    assert fake_graphs.captures == 1
    decoder.inv_freq = decoder.inv_freq.clone()  # same values, new storage
    model.cuda_graphs.run("clip", program, None, None, model.graph_tensors())
    assert fake_graphs.captures == 2


def test_noop_to_keeps_the_rope_buffer_and_the_graphs(fake_graphs):
    model = random_model(small_config(), seed=1)
    decoder = model.gazing_model.gaze_decoder
    before = decoder.inv_freq
    model.cuda_graphs.run("clip", lambda v, r: ([], []), None, None, model.graph_tensors())
    model.to("cpu")
    model.to(torch.float32)
    assert decoder.inv_freq is before
    assert len(model.cuda_graphs) == 1
    model.cuda_graphs.run("clip", lambda v, r: ([], []), None, None, model.graph_tensors())
    assert fake_graphs.captures == 1


def test_cast_drops_stale_graphs_and_keeps_rope_float32(fake_graphs):
    model = random_model(small_config(), seed=1)
    expected = model.gazing_model.gaze_decoder.inv_freq.clone()
    model.cuda_graphs.run("clip", lambda v, r: ([], []), None, None, model.graph_tensors())
    model.to(torch.bfloat16)
    assert len(model.cuda_graphs) == 0  # its weights are gone: it can never be replayed
    inv_freq = model.gazing_model.gaze_decoder.inv_freq
    assert inv_freq.dtype == torch.float32 and torch.equal(inv_freq, expected)


def test_graph_cache_holds_the_tensors_a_graph_reads(fake_graphs):
    """The tensors of a live graph stay allocated, so the allocator cannot hand their memory out."""
    import weakref

    cache = GraphCache(max_graphs=1)
    weight = torch.ones(4)
    ref = weakref.ref(weight)
    cache.run("a", lambda v, r: ([], []), None, None, [weight])
    del weight
    assert ref() is not None
    cache.run("b", lambda v, r: ([], []), None, None, [torch.zeros(4)])  # evicts "a"
    assert ref() is None


class _Recorder:
    """Fake torch.cuda device/stream/graph machinery: records the device and stream in use."""

    def __init__(self):
        self.device, self.stream, self.events = 0, "default", []

    def device_ctx(self, device):
        rec = self

        class Ctx:
            def __enter__(self):
                self.saved, rec.device = rec.device, torch.device(device).index
                rec.events.append(("enter device", rec.device))

            def __exit__(self, *exc):
                rec.device = self.saved

        return Ctx()

    def stream_ctx(self, stream):
        rec = self

        class Ctx:
            def __enter__(self):
                self.saved, rec.stream = rec.stream, stream

            def __exit__(self, *exc):
                rec.stream = self.saved

        return Ctx()

    def make_stream(self, device=None):
        rec = self

        class Stream:
            def __init__(self):
                self.device = torch.device(device).index if device is not None else rec.device

            def wait_stream(self, other):
                pass

        return Stream()

    def graph_ctx(self, graph, stream=None, **kwargs):
        rec = self

        class Ctx:
            def __enter__(self):
                rec.events.append(("capture", rec.device, stream))
                self.saved, rec.stream = rec.stream, stream

            def __exit__(self, *exc):
                rec.stream = self.saved

        return Ctx()

    def make_graph(self):
        rec = self

        class Graph:
            def replay(self):
                rec.events.append(("replay", rec.device, rec.stream))

        return Graph()


class _FakeCudaVideo:
    device = torch.device("cuda", 1)

    def clone(self):
        return self

    def copy_(self, other):
        return self


def test_capture_runs_under_the_videos_device_on_an_explicit_stream(monkeypatch):
    """A video on cuda:1 while cuda:0 is current: warm-up and capture run on a cuda:1 stream that
    is passed to torch.cuda.graph, and replay runs under cuda:1."""
    rec = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", rec.device_ctx)
    monkeypatch.setattr(torch.cuda, "stream", rec.stream_ctx)
    monkeypatch.setattr(torch.cuda, "Stream", rec.make_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: rec.make_stream(device))
    monkeypatch.setattr(torch.cuda, "graph", rec.graph_ctx)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", rec.make_graph)
    runs = []

    def program(video, requirement):
        runs.append((rec.device, rec.stream))
        return [torch.zeros(1)], [torch.zeros(1)]

    graph = ClipGraph(program, _FakeCudaVideo(), None)
    (warm_device, warm_stream), (capture_device, capture_stream) = runs
    assert warm_device == capture_device == 1
    assert warm_stream is capture_stream and warm_stream.device == 1
    captures = [e for e in rec.events if e[0] == "capture"]
    assert captures == [("capture", 1, capture_stream)]
    rec.device = 0
    graph(_FakeCudaVideo(), None)
    assert rec.events[-1][:2] == ("replay", 1)


@pytest.mark.cuda
def test_noop_to_then_reused_memory_still_replays_exactly():
    """After a no-op .to() and fresh allocations that could reuse freed memory, replay = eager."""
    model = random_model(small_config(), seed=8).cuda()
    clip = random_video(2, 3, 64, seed=9).cuda()
    eager = model(clip, gazing_ratio=0.5)
    model(clip, gazing_ratio=0.5, cuda_graph=True)
    model.to("cuda")
    junk = [torch.full((4096,), 1e30, device="cuda") for _ in range(64)]  # noqa: F841
    graphed = model(clip, gazing_ratio=0.5, cuda_graph=True)
    assert torch.equal(eager["ids"], graphed["ids"]) and len(model.cuda_graphs) == 1


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_replay_on_the_second_device_while_the_first_is_current():
    model = random_model(small_config(), seed=10).to("cuda:1")
    clip = random_video(2, 3, 64, seed=11).to("cuda:1")
    with torch.cuda.device(0):
        eager = model(clip, gazing_ratio=0.5)
        graphed = [model(clip, gazing_ratio=0.5, cuda_graph=True) for _ in range(2)]
    for out in graphed:
        assert torch.equal(eager["ids"], out["ids"])

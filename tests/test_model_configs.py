"""Random-init models of other family configurations: generation invariants, batch invariance,
official batching at B=1, streaming, checkpoint round trips, teacher-forced scoring, the
decode-position quirk, sampling and bfloat16."""

from __future__ import annotations

import functools

import pytest
import torch

from autogaze_ext import AutoGaze, AutoGazeConfig
from autogaze_ext.checkpoint import load_safetensors, save_safetensors
from autogaze_ext.decoder import rope_inv_freq

from helpers import (budget_of, check_output, clip_frames, clone, padded_frames, random_model,
                     random_video, small_config)

# name → (small_config overrides, gazing ratio giving a few selection steps per frame)
CONFIGS = {
    "k4_2layers": ({}, 0.5),                                            # N=20, budget 10: 4+4+2
    "k1": (dict(num_multi_token_pred=1), 0.2),                          # one id per step
    "k3_3layers": (dict(num_multi_token_pred=3, num_layers=3), 0.45),   # budget 9: 3+3+3
    "single224_n196": (dict(scales="224", input_img_size=224, num_multi_token_pred=5), 0.1),
    "release_scales_k10": (dict(scales="32+64+112+224", input_img_size=224,
                                num_multi_token_pred=10), 0.1),         # N=265, budget 26
    "hidden96_3heads": (dict(hidden_size=96, num_heads=3, intermediate_size=160), 0.5),
    "gqa_4q_2kv": (dict(num_heads=4, num_key_value_heads=2), 0.5),
    "mqa_4q_1kv": (dict(num_heads=4, num_key_value_heads=1), 0.5),
    "depth2": (dict(depth=2), 0.5),
    "trunk_t1_s1": (dict(trunk_temporal_kernel_size=1, trunk_spatial_kernel_size=1), 0.5),
    "trunk_t2": (dict(trunk_temporal_kernel_size=2), 0.5),
    "rope_plain": (dict(rope_scaling=None, rope_theta=10000.0), 0.5),
}
NAMES = list(CONFIGS)
REQ = -0.8  # task-loss predictions of the random models are ~N(0,1): some tokens meet this
T = 3


@functools.lru_cache(maxsize=None)
def _model(name: str) -> AutoGaze:
    overrides, _ = CONFIGS[name]
    torch.manual_seed(0)
    return random_model(small_config(**overrides), seed=sum(map(ord, name)))


@pytest.fixture(params=NAMES)
def case(request):
    """(name, model, ratio, video (3,T,3,S,S)); tests must not modify the model."""
    name = request.param
    model = _model(name)
    size = model.config.vision.input_img_size
    return name, model, CONFIGS[name][1], random_video(3, T, size, seed=len(name))


def _params(model):
    n = model.num_tokens
    k = model.config.decoder.num_multi_token_pred
    return n, k, model.config.tokens_per_scale


def _same_gaze(a, b):
    for key in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame", "ids",
                "frame_offsets"):
        assert torch.equal(a[key], b[key]), key
    for x, y in zip(a["gazing_mask"], b["gazing_mask"]):
        assert torch.equal(x, y)


def test_configs_are_what_they_claim():
    assert _model("gqa_4q_2kv").config.decoder.num_kv_heads == 2
    assert _model("mqa_4q_1kv").config.decoder.num_kv_heads == 1
    assert _model("single224_n196").num_tokens == 196
    assert _model("single224_n196").config.tokens_per_scale == [196]
    assert _model("release_scales_k10").config.tokens_per_scale == [4, 16, 49, 196]
    assert _model("hidden96_3heads").config.decoder.head_dim == 32
    assert _model("trunk_t2").config.vision.trunk_temporal_kernel_size == 2
    assert len(_model("depth2").gazing_model.vision_model.blocks) == 2
    assert _model("k4_2layers").config.tokens_per_scale == [4, 16]


# ---- (a) generation invariants ----------------------------------------------------------------

def test_invariants_ratio_only(case):
    name, model, ratio, video = case
    n, k, per_scale = _params(model)
    out = model(video, gazing_ratio=ratio)
    check_output(out, 3, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=False)
    assert out["has_task_loss_requirement"] is False and out["task_loss_requirement"] is None
    assert out["num_vision_tokens_each_frame"] == n and out["scales"] == model.scales


def test_invariants_with_requirement(case):
    name, model, ratio, video = case
    n, k, per_scale = _params(model)
    out = model(video, gazing_ratio=ratio, task_loss_requirement=REQ)
    check_output(out, 3, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=True)
    assert out["has_task_loss_requirement"] is True
    assert torch.equal(out["task_loss_requirement"], torch.full((3, T), REQ))


def test_invariants_per_frame_ratios(case):
    name, model, ratio, video = case
    n, k, per_scale = _params(model)
    ratios = [ratio, min(1.0, 2 * ratio), 0.5 / n]  # the last one gives the minimum budget 1
    budgets = [budget_of(r, n) for r in ratios]
    assert budgets[2] == 1
    out = model(video, gazing_ratio=ratios)
    check_output(out, 3, T, n, budgets, per_scale, with_requirement=False)


def test_invariants_config_defaults():
    # neither ratio nor requirement: the checkpoint's inference settings (build(): fixed ratio 0.75,
    # requirement 0.7)
    model = _model("k4_2layers")
    n, k, per_scale = _params(model)
    video = random_video(2, T, 64, seed=3)
    out = model(video)
    check_output(out, 2, T, n, [budget_of(0.75, n)] * T, per_scale, with_requirement=True)
    assert torch.equal(out["task_loss_requirement"], torch.full((2, T), 0.7))


def test_requirement_tensor_rows():
    """A (B,T) requirement applies per row: −1e9 never stops (exactly the budget), +1e9 stops every
    token it may (only the first slot of each frame survives: first-step exception, element-wise
    replacement), and an ordinary row equals that clip run alone with the scalar."""
    model = _model("k4_2layers")
    n, k, per_scale = _params(model)
    ratio = 0.5
    budget = budget_of(ratio, n)
    video = random_video(3, T, 64, seed=5)
    req = torch.tensor([[-1e9] * T, [1e9] * T, [REQ] * T])
    out = model(video, gazing_ratio=ratio, task_loss_requirement=req)
    check_output(out, 3, T, n, [budget] * T, per_scale, with_requirement=True)
    assert [len(f) for f in clip_frames(out, 0, T)] == [budget] * T
    assert [len(f) for f in clip_frames(out, 1, T)] == [1] * T
    # row 1's first step: K slots, slot 0 real, slots 1..K−1 replaced by pads
    for frame in padded_frames(out, 1, n):
        assert frame[0] is not None and frame[1:k] == [None] * (k - 1)
    alone = model(video[2:3], gazing_ratio=ratio, task_loss_requirement=REQ)
    assert clip_frames(out, 2, T) == clip_frames(alone, 0, T)


# ---- (b) batch invariance, (c) official batching at B=1 ---------------------------------------

@pytest.mark.parametrize("requirement", [None, REQ], ids=["ratio", "ratio+req"])
def test_batch_invariance(case, requirement):
    name, model, ratio, video = case
    batched = model(video, gazing_ratio=ratio, task_loss_requirement=requirement)
    per_clip = [clip_frames(batched, b, T) for b in range(3)]
    for b in range(3):
        alone = model(video[b:b + 1], gazing_ratio=ratio, task_loss_requirement=requirement)
        assert clip_frames(alone, 0, T) == per_clip[b], f"clip {b}"
    assert per_clip[0] != per_clip[1] or per_clip[1] != per_clip[2], "clips should differ"


def test_batched_requirement_runs_are_uneven():
    """Sanity of the set-up above: with REQ, frames of the base model's clips end after different
    numbers of steps, so coupled batching would matter."""
    model = _model("k4_2layers")
    video = random_video(3, T, 64, seed=len("k4_2layers"))
    out = model(video, gazing_ratio=0.5, task_loss_requirement=REQ)
    lengths = {len(f) for b in range(3) for f in clip_frames(out, b, T)}
    assert len(lengths) > 1
    assert bool(out["if_padded_gazing"].any())


def test_official_batching_single_clip_equals_default(case):
    name, model, ratio, video = case
    clip = video[:1]
    for requirement in (None, REQ):
        default = model(clip, gazing_ratio=ratio, task_loss_requirement=requirement)
        official = model(clip, gazing_ratio=ratio, task_loss_requirement=requirement,
                         official_batching=True)
        _same_gaze(default, official)


def test_no_early_exit_gives_the_same_gaze(case, monkeypatch):
    """On GPUs generation runs every step of a frame without the host-side early exit; the extra
    steps of finished samples must be exact no-ops. Force that path on the CPU."""
    name, model, ratio, video = case
    import autogaze_ext.model as model_module

    original = model_module.gaze_frame
    flags = []

    def no_early_exit(*args, early_exit, **kwargs):
        flags.append(early_exit)
        return original(*args, early_exit=False, **kwargs)

    expected = model(video, gazing_ratio=ratio, task_loss_requirement=REQ)
    monkeypatch.setattr(model_module, "gaze_frame", no_early_exit)
    got = model(video, gazing_ratio=ratio, task_loss_requirement=REQ)
    assert flags == [True] * T  # the CPU path does exit early
    _same_gaze(expected, got)
    _same_gaze(model(video[:1], gazing_ratio=ratio, task_loss_requirement=REQ,
                     official_batching=True),
               model(video[:1], gazing_ratio=ratio, task_loss_requirement=REQ))


# ---- (d) streaming -------------------------------------------------------------------------------

def test_streaming_equals_offline(case):
    name, model, ratio, video = case
    n, k, _ = _params(model)
    clips = video[:2]
    offline = model(clips, gazing_ratio=ratio, task_loss_requirement=REQ)
    state = model.init_stream(batch_size=2)
    start = 0
    for t in range(T):
        step = model.stream_step(clips[:, t], state, gazing_ratio=ratio, task_loss_requirement=REQ)
        count = int(offline["num_gazing_each_frame"][t])
        assert step["num_gazing_each_frame"].tolist() == [count]
        # frame-local ids; offline ids are global (+N·t)
        assert torch.equal(step["gazing_pos"] + n * t,
                           offline["gazing_pos"][:, start:start + count])
        assert torch.equal(step["if_padded_gazing"],
                           offline["if_padded_gazing"][:, start:start + count])
        for b in range(2):
            assert clip_frames(step, b, 1)[0] == clip_frames(offline, b, T)[t]
        start += count
    assert state.frames_seen == T


# ---- (e) checkpoints -------------------------------------------------------------------------------

def test_save_load_round_trip(case, tmp_path):
    name, model, ratio, video = case
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors",
                                                     "preprocessor_config.json"}
    loaded = AutoGaze.from_pretrained(tmp_path)
    assert loaded.config.to_dict() == model.config.to_dict()
    assert loaded.processor.to_dict() == model.processor.to_dict()
    own, new = model.state_dict(), loaded.state_dict()
    assert own.keys() == new.keys()
    for key in own:
        assert new[key].dtype == torch.float32
        assert torch.equal(own[key], new[key]), key
    _same_gaze(model(video, gazing_ratio=ratio, task_loss_requirement=REQ),
               loaded(video, gazing_ratio=ratio, task_loss_requirement=REQ))


def test_bf16_checkpoint_loads_as_float32(tmp_path):
    model = _model("gqa_4q_2kv")
    model.config.save(tmp_path / "config.json")
    state = {key: value.to(torch.bfloat16) for key, value in model.state_dict().items()}
    save_safetensors(state, tmp_path / "model.safetensors")
    assert all(v.dtype == torch.bfloat16
               for v in load_safetensors(tmp_path / "model.safetensors").values())
    loaded = AutoGaze.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, state[key].float()), key
    video = random_video(1, 2, 64, seed=1)
    out = loaded(video, gazing_ratio=0.5)
    check_output(out, 1, 2, loaded.num_tokens, [10, 10], loaded.config.tokens_per_scale, False)


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    config = small_config(some_future_field={"a": [1, 2]})
    config.save(tmp_path / "config.json")
    again = AutoGazeConfig.from_json_file(tmp_path / "config.json")
    assert again.to_dict() == config.to_dict()
    assert again.raw["some_future_field"] == {"a": [1, 2]}


# ---- (f) teacher-forced scoring -------------------------------------------------------------------

def _head_distributions(model, clip, frames, t, k):
    """P (k, N+1): head j's distribution at the source of frame t's first K-block, read from
    ``score``. The block's K slots are all scored from the same source token (the frame's last
    vision token), whose hidden state does not depend on the block's ids, so a batch of N+1 copies
    whose block is all-v (v = EOS as pads) gives every head's full distribution."""
    n = model.num_tokens
    vocab = n + 1
    pos, pad, counts = [], [], []
    for s in range(t):
        slots = frames[s]
        counts.append(len(slots))
        pos += [n * s + (n if i is None else i) for i in slots]
        pad += [i is None for i in slots]
    counts.append(k)
    rows = torch.arange(vocab)
    gazing_pos = torch.cat([torch.tensor(pos, dtype=torch.long).expand(vocab, -1),
                            (rows + n * t)[:, None].expand(vocab, k)], 1)
    if_padded = torch.cat([torch.tensor(pad, dtype=torch.bool).expand(vocab, -1),
                           (rows == n)[:, None].expand(vocab, k)], 1)
    info = dict(gazing_pos=gazing_pos, if_padded_gazing=if_padded,
                num_gazing_each_frame=torch.tensor(counts))
    with torch.no_grad():
        probs = model.score(clip[:, : t + 1].expand(vocab, -1, -1, -1, -1), info)["gaze_probs"]
    return probs[:, -k:].T  # (k, vocab)


def test_score_first_block_of_frame0_is_the_greedy_max(case):
    """Frame 0's first selection step is fed identically in generation and in the teacher-forced
    pass (the prefill of the vision tokens, consecutive positions 0..P−1): the score of slot j is
    head j's softmax at the last vision token. Greedy picks id_j = argmax of head j over the ids
    that are neither EOS nor picked by heads 0..j−1 of the step (in-step no-repeat), so score(id_j)
    must be the max of that restricted distribution — for j = 0 the max over all real ids. Later
    blocks are fed at the decode-position quirk in generation but at consecutive positions by
    ``score``, so nothing exact holds for them."""
    name, model, ratio, video = case
    n, k, _ = _params(model)
    clip = video[:1, :1]
    out = model(clip, gazing_ratio=ratio)
    with torch.no_grad():
        scored = model.score(clip, out)
    ids = clip_frames(out, 0, 1)[0]
    probs = _head_distributions(model, clip, [ids], 0, k)
    assert torch.allclose(probs.sum(-1), torch.ones(k), atol=1e-5)
    first = min(k, len(ids))
    for j in range(first):
        allowed = torch.ones(n + 1, dtype=torch.bool)
        allowed[n] = False
        allowed[ids[:j]] = False
        restricted = probs[j].masked_fill(~allowed, -1.0)
        assert int(restricted.argmax()) == ids[j], f"slot {j}"
        assert torch.allclose(scored["gaze_probs"][0, j], restricted.max(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(scored["log_action_probs"], torch.log(scored["gaze_probs"] + 1e-8))
    assert scored["gaze_probs"].shape == scored["task_loss_prediction"].shape == out["gazing_pos"].shape


def test_score_matches_generation_when_frames_are_one_step(case):
    """With budget = K every frame is a single selection step: nothing is ever fed at a decode
    position (each frame's ids are the next frame's leftover, fed at consecutive positions), so the
    teacher-forced pass sees exactly the generation's sequence for every frame. Then, per frame:
    * slot j (j ≥ 1) is a pad iff the predicted loss c_j ≤ R, and ``score`` reports c_j as the
      task-loss prediction of slot j−1 (spec §0.2, §0.5, §7); slot 0 is always real;
    * a real slot j is head j's argmax among the ids not excluded by the step: excluded are EOS,
      the earlier real ids and the (unknown) picks that were replaced by pads, so at most
      #pads-before-j allowed ids may score higher."""
    name, model, ratio, video = case
    n, k, _ = _params(model)
    frames = 2 if n > 100 else T
    clip = video[1:2, :frames]
    ratio = (k + 0.5) / n
    assert budget_of(ratio, n) == k
    out = model(clip, gazing_ratio=ratio, task_loss_requirement=REQ)
    with torch.no_grad():
        scored = model.score(clip, out)
    slots = padded_frames(out, 0, n)
    assert out["num_gazing_each_frame"].tolist() == [k] * frames
    loss = scored["task_loss_prediction"][0].view(frames, k)
    for t in range(frames):
        frame = slots[t]
        assert frame[0] is not None
        for j in range(1, k):
            assert (frame[j] is None) == bool(loss[t, j - 1] <= REQ), (t, j)
        probs = _head_distributions(model, clip, slots, t, k)
        for j, id_j in enumerate(frame):
            if id_j is None:
                assert torch.allclose(scored["gaze_probs"][0, t * k + j], probs[j, n], atol=1e-6)
                continue
            allowed = torch.ones(n + 1, dtype=torch.bool)
            allowed[n] = False
            allowed[[i for i in frame[:j] if i is not None]] = False
            higher = int(((probs[j] > probs[j, id_j]) & allowed).sum())
            assert higher <= frame[:j].count(None), (t, j)
            assert torch.allclose(scored["gaze_probs"][0, t * k + j], probs[j, id_j], atol=1e-6)


# ---- (g) the decode-position quirk ------------------------------------------------------------------

def _patch_decode_positions(monkeypatch, model, consecutive: bool, log: list):
    """Wrap the decoder's forward. Prefill calls feed ≥ P tokens (P vision tokens > K), decode
    calls exactly K. Records (q, positions) of decode calls, q = last prefill position. With
    ``consecutive`` the decode calls get q+1+s·K… (the teacher-forced positions) instead."""
    decoder = model.gazing_model.gaze_decoder
    k = decoder.cfg.num_multi_token_pred
    assert model.config.vision.num_tokens > k
    original = decoder.forward
    state = {}

    def forward(x, positions, visible, cache):
        if x.shape[1] == k:
            log.append((state["q"].clone(), positions.clone()))
            if consecutive:
                positions = state["q"][:, None] + 1 + state["steps"] * k + torch.arange(k)
                state["steps"] += 1
        else:
            state["q"], state["steps"] = positions[:, -1], 0
        return original(x, positions, visible, cache)

    monkeypatch.setattr(decoder, "forward", forward)


def test_decode_steps_reuse_the_tail_positions(case, monkeypatch):
    """Spec §0.1: every decode call of a frame feeds its K ids at q−K+1 … q."""
    name, model, ratio, video = case
    model = clone(model)
    n, k, _ = _params(model)
    assert k < budget_of(ratio, n)  # so that there are decode steps without a requirement
    for requirement in (None, REQ):
        log = []
        with monkeypatch.context() as m:
            _patch_decode_positions(m, model, consecutive=False, log=log)
            # the reference backend: its decode calls go through decoder.forward, which is patched
            patched = model(video, gazing_ratio=ratio, task_loss_requirement=requirement,
                            backend="reference")
        _same_gaze(patched, model(video, gazing_ratio=ratio, task_loss_requirement=requirement))
        if requirement is None:
            steps = -(-budget_of(ratio, n) // k)
            assert len(log) == T * (steps - 1)
        for q, positions in log:
            assert torch.equal(positions, q[:, None] - k + 1 + torch.arange(k))


def test_consecutive_decode_positions_change_the_gaze(monkeypatch):
    """Guard that the quirk matters: feeding decode steps at consecutive positions (what a
    'fix' would do) changes the generated ids of these random models."""
    changed = []
    for name in ("k4_2layers", "hidden96_3heads", "gqa_4q_2kv"):
        model = clone(_model(name))
        ratio = CONFIGS[name][1]
        video = random_video(2, T, 64, seed=11)
        reference = model(video, gazing_ratio=ratio)
        log = []
        with monkeypatch.context() as m:
            _patch_decode_positions(m, model, consecutive=True, log=log)
            fixed = model(video, gazing_ratio=ratio, backend="reference")
        assert log
        changed.append(not torch.equal(reference["ids"], fixed["ids"]))
    assert any(changed)


# ---- (h) sampling ------------------------------------------------------------------------------------

def _sample(model, video, seed, temperature=1.0, ratio=0.5):
    gen = torch.Generator().manual_seed(seed)
    return model(video, gazing_ratio=ratio, do_sample=True, temperature=temperature,
                 generator=gen)


@pytest.mark.parametrize("name", ["k4_2layers", "single224_n196"])
def test_sampling(name):
    base = _model(name)
    # a flatter head than the greedy tests use, so that draws really vary
    model = random_model(base.config, seed=7, lm_head_scale=1.0)
    n, k, per_scale = _params(model)
    ratio = CONFIGS[name][1]
    video = random_video(2, T, model.config.vision.input_img_size, seed=2)
    a = _sample(model, video, 0, ratio=ratio)
    check_output(a, 2, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=False)
    _same_gaze(a, _sample(model, video, 0, ratio=ratio))
    assert not torch.equal(a["ids"], _sample(model, video, 1, ratio=ratio)["ids"])
    hot = _sample(model, video, 0, temperature=3.0, ratio=ratio)
    check_output(hot, 2, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=False)
    assert not torch.equal(a["ids"], hot["ids"])
    greedy = model(video, gazing_ratio=ratio)
    assert not torch.equal(a["ids"], greedy["ids"])


def test_sampling_with_requirement():
    model = random_model(_model("k4_2layers").config, seed=7, lm_head_scale=1.0)
    n, k, per_scale = _params(model)
    video = random_video(1, T, 64, seed=2)
    out = model(video, gazing_ratio=0.5, task_loss_requirement=REQ, do_sample=True,
                generator=torch.Generator().manual_seed(3))
    check_output(out, 1, T, n, [10] * T, per_scale, with_requirement=True)


def test_low_temperature_sampling_is_greedy():
    model = _model("k4_2layers")
    video = random_video(2, T, 64, seed=4)
    greedy = model(video, gazing_ratio=0.5)
    cold = _sample(model, video, 0, temperature=1e-4)
    assert torch.equal(greedy["ids"], cold["ids"])


# ---- (i) bfloat16 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["k4_2layers", "gqa_4q_2kv", "release_scales_k10"])
def test_bfloat16_model(name):
    model = clone(_model(name)).to(torch.bfloat16)
    n, k, per_scale = _params(model)
    ratio = CONFIGS[name][1]
    assert model.dtype == torch.bfloat16
    decoder = model.gazing_model.gaze_decoder
    assert decoder.inv_freq.dtype == torch.float32
    assert torch.equal(decoder.inv_freq, rope_inv_freq(decoder.cfg.head_dim, decoder.cfg.rope_theta,
                                                       decoder.cfg.rope_scaling))
    video = random_video(2, T, model.config.vision.input_img_size, seed=6)  # float32 input
    out = model(video, gazing_ratio=ratio, task_loss_requirement=REQ)
    check_output(out, 2, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=True)
    out = model(video, gazing_ratio=ratio)
    check_output(out, 2, T, n, [budget_of(ratio, n)] * T, per_scale, with_requirement=False)
    back = model.to(torch.float32)
    assert back.gazing_model.gaze_decoder.inv_freq.dtype == torch.float32


def test_video_of_another_size_is_resized():
    """Frames that are not input_img_size² (here non-square) are resized inside the model."""
    model = _model("k4_2layers")
    n, k, per_scale = _params(model)
    video = random_video(2, T, (48, 80), seed=8)
    out = model(video, gazing_ratio=0.5, task_loss_requirement=REQ)
    check_output(out, 2, T, n, [10] * T, per_scale, with_requirement=True)
    resized = torch.nn.functional.interpolate(video.flatten(0, 1), size=(64, 64), mode="bicubic",
                                              align_corners=False).view(2, T, 3, 64, 64)
    _same_gaze(out, model(resized, gazing_ratio=0.5, task_loss_requirement=REQ))

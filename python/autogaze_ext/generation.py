"""Frame-by-frame gaze generation with a static KV cache (spec §6.2-6.4).

The selection step and the decode call are pluggable: plain PyTorch (the reference) or the native
ops (``ops.select_step``, ``ops.decode_step``), chosen by ``backend`` (see ``native_ops``).

One frame: a prefill feeds the previous frame's leftover tokens and the frame's vision tokens; then
selection steps pick up to K ids each from the K heads of the last fed token, and every step but
the frame's last is fed back as a decode call. All decisions stay in tensors; the only host read is
an optional early exit once every sample is done (``early_exit``: free on the CPU, a sync on GPUs).
Extra steps after that are exact no-ops: their cache slots are invisible.

Two batching semantics:

* ``coupled=False`` (default): every sample behaves as if it ran alone. A sample whose frame is over
  idles (its slots are invisible) and its last step becomes its own leftover.
* ``coupled=True``: the official behaviour (spec §0.11): the batch shares the step count of a frame;
  finished samples receive pads that are fed (visible until the frame ends) like real tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import reference
from .decoder import GazeDecoder, KVCache

TOP_K = 50  # the official sampler's top-k (HF default, spec §6.4 step 3)


@dataclass
class Sampling:
    """How ids are chosen (greedy or sampled) and by which implementation of the step."""
    do_sample: bool = False
    temperature: float = 1.0
    generator: torch.Generator | None = None
    backend: str = "auto"
    # (N,) bool over the N candidate ids (EOS excluded): the ids a frame may pick; None = all.
    # Banned ids start a frame as already used, so budgets beyond the allowed count stop there.
    candidates: torch.Tensor | None = None


@dataclass
class DecodeState:
    """What a clip carries from one frame to the next (also the streaming state)."""
    cache: KVCache
    valid_count: torch.Tensor  # (B,) long: visible tokens so far (next RoPE position)
    leftover_ids: torch.Tensor  # (B,K) long: last step of the previous frame, EOS-padded
    leftover_len: torch.Tensor  # (B,) long
    has_leftover: bool = False


BACKENDS = ("auto", "reference", "native")


def uniform_draws(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0,1) float32 draws of ``shape`` on ``device``.

    torch only draws with a generator on the generator's own device (a CPU generator cannot fill
    a CUDA tensor, nor the reverse), so the draws are taken there and moved: the same generator
    gives the same draws for a model on any device."""
    source = torch.device(device) if generator is None else generator.device
    return torch.rand(shape, device=source, generator=generator).to(device)


class ReferenceStep:
    """A decode call in plain PyTorch: ``decoder.forward`` then the heads of the last token."""

    def __init__(self, decoder: GazeDecoder):
        self.decoder = decoder

    def __call__(self, x, positions, visible, cache: KVCache):
        return self.decoder.heads(self.decoder(x, positions, visible, cache)[:, -1])


class NativeStep:
    """The same decode call as one native op (``ops.decode_step``)."""

    def __init__(self, decoder: GazeDecoder, ops):
        self.decoder, self.ops = decoder, ops
        self.weights = ops.decoder_weights(decoder)

    def __call__(self, x, positions, visible, cache: KVCache):
        n = x.shape[1]
        cache.reserve(n)
        out = self.ops.decode_step(x, positions, visible, cache.k, cache.v, cache.key_mask,
                                   cache.length, self.weights, self.decoder.inv_freq,
                                   self.decoder.cfg.rms_norm_eps)
        cache.length += n
        return out


def native_ops(backend: str, device: torch.device):
    """``autogaze_ext.ops`` when ``backend`` asks for the native path here, else None.

    ``auto`` takes the native ops on the CPU when the extension is built. On CUDA it stays on the
    reference until the CUDA kernels have been verified on a GPU (ask for ``native`` to try them).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference" or (backend == "auto" and device.type != "cpu"):
        return None
    try:
        from . import ops
    except ImportError:
        if backend == "native":
            raise
        return None
    return ops


def selection_op(backend: str, device: torch.device):
    """The selection step to use: ``reference.select_step`` or the native op."""
    ops = native_ops(backend, device)
    return reference.select_step if ops is None else ops.select_step


def decode_op(backend: str, decoder: GazeDecoder):
    """The decode call to use: ``ReferenceStep`` or ``NativeStep``."""
    ops = native_ops(backend, decoder.lm_head.weight.device)
    return ReferenceStep(decoder) if ops is None else NativeStep(decoder, ops)


def new_state(decoder: GazeDecoder, batch: int, capacity: int) -> DecodeState:
    k, eos = decoder.cfg.num_multi_token_pred, decoder.cfg.eos_token_id
    device = decoder.lm_head.weight.device
    return DecodeState(
        cache=decoder.new_cache(batch, capacity),
        valid_count=torch.zeros(batch, dtype=torch.long, device=device),
        leftover_ids=torch.full((batch, k), eos, dtype=torch.long, device=device),
        leftover_len=torch.zeros(batch, dtype=torch.long, device=device))


def frame_capacity(num_vision_tokens: int, budget: int, k: int) -> int:
    """Cache slots one frame can use: leftover + vision + decode calls."""
    return k + num_vision_tokens + (math.ceil(budget / k) - 1) * k


def _prefill(decoder: GazeDecoder, state: DecodeState, vision: torch.Tensor):
    """Feed [leftover | vision tokens]; leftovers are left-padded to K with invisible slots."""
    k, eos = decoder.cfg.num_multi_token_pred, decoder.cfg.eos_token_id
    device = vision.device
    x, visible = vision, torch.ones(vision.shape[:2], dtype=torch.bool, device=device)
    if state.has_leftover:
        src = torch.arange(k, device=device) - (k - state.leftover_len)[:, None]
        ids = state.leftover_ids.gather(1, src.clamp(min=0))
        real = (src >= 0) & (ids != eos)
        x = torch.cat((decoder.embed(ids).to(vision.dtype), vision), dim=1)
        visible = torch.cat((real, visible), dim=1)
    positions = state.valid_count[:, None] + visible.long().cumsum(1) - 1
    hidden = decoder(x, positions, visible, state.cache)
    state.valid_count = state.valid_count + visible.sum(1)
    return decoder.heads(hidden[:, -1])


def written_ids(tokens: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, k: int,
                eos: int) -> torch.Tensor:
    """(B,K) the slots ``start..stop`` (B,) a step wrote into ``tokens`` (B,W), EOS beyond."""
    offsets = torch.arange(k, device=tokens.device)
    where = (start[:, None] + offsets).clamp(max=tokens.shape[1] - 1)
    return torch.where(offsets < (stop - start)[:, None], tokens.gather(1, where), eos)


def gaze_frame(decoder: GazeDecoder, state: DecodeState, vision: torch.Tensor, budget: int,
               requirement: torch.Tensor | None, sampling: Sampling, coupled: bool,
               early_exit: bool, select=reference.select_step, decode=None, measure=None):
    """Generate one frame's gaze for the batch.

    vision (B,P,D) vision tokens; budget: max tokens M_t of the frame; requirement (B,) or None.
    ``select`` is the selection step (``reference.select_step`` or the native op); ``decode`` the
    decode call (``ReferenceStep`` by default, or ``NativeStep``). ``measure``: None (the head's
    predicted loss decides the stop) or a ``PaintStop`` begun on this frame, whose measured
    prefix losses decide it instead (and which paints the frame's kept ids).
    Returns tokens (B,M_t) local ids in generation order (EOS = pad, also after the count) and
    counts (B,) slots used per sample (pads included).
    """
    cfg = decoder.cfg
    k, eos, vocab = cfg.num_multi_token_pred, cfg.eos_token_id, cfg.vocab_size
    decode = decode or ReferenceStep(decoder)
    batch, device = vision.shape[0], vision.device
    steps = math.ceil(budget / k)
    state.cache.reserve(frame_capacity(vision.shape[1], budget, k))

    logits, loss_pred = _prefill(decoder, state, vision)
    tail = state.valid_count[:, None] - k + torch.arange(k, device=device)

    tokens = torch.full((batch, budget + k), eos, dtype=torch.long, device=device)
    n = torch.zeros(batch, dtype=torch.long, device=device)
    used = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
    if sampling.candidates is not None:
        used[:, : vocab - 1] = ~sampling.candidates.to(device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    if measure is not None and requirement is not None:
        measure.restrict_met_frames(used, requirement)
    decode_start = state.cache.length
    fed_ids = []

    for step in range(steps):
        uniforms = None
        if sampling.do_sample:
            uniforms = uniform_draws((batch, k), device, sampling.generator)
        if measure is not None:
            start = n.clone()
        if measure is not None and requirement is not None:
            # the step's picks do not depend on the requirement: make them on copies of the
            # state, measure the loss before each, and let that decide where the step stops
            probe_tokens, probe_n = tokens.clone(), n.clone()
            select(logits, loss_pred, None, uniforms, used.clone(), probe_n, finished.clone(),
                   done.clone(), probe_tokens, state.leftover_ids.clone(),
                   state.leftover_len.clone(), budget, step == 0, coupled,
                   sampling.temperature, TOP_K)
            loss_pred = measure.losses_before(written_ids(probe_tokens, start, probe_n, k, eos))
        fed = select(logits, loss_pred, requirement, uniforms, used, n, finished, done, tokens,
                     state.leftover_ids, state.leftover_len, budget, step == 0, coupled,
                     sampling.temperature, TOP_K)
        if measure is not None:
            kept = written_ids(tokens, start, n, k, eos)
            if requirement is None:
                measure.losses_before(kept)  # no stop to decide: only track the painted frame
            measure.commit(kept)
        if step + 1 == steps or (early_exit and bool(done.all())):
            break
        fed_ids.append(fed)
        logits, loss_pred = decode(decoder.embed(fed).to(vision.dtype), tail,
                                   (~done)[:, None].expand(batch, k), state.cache)

    # From the next frame on, pads fed during this frame stop being visible (spec §6.3).
    if fed_ids:
        fed_all = torch.cat(fed_ids, dim=1)
        span = slice(decode_start, decode_start + fed_all.shape[1])
        state.cache.key_mask[:, span] &= fed_all != eos
        state.valid_count = state.valid_count + state.cache.key_mask[:, span].sum(1)
    state.has_leftover = True
    return tokens[:, :budget], n

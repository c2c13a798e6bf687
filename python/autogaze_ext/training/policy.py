"""Generation-consistent scoring of a gaze rollout (fixes spec §13 row 5).

The official GRPO scores rollouts with the teacher-forced pass (§7): consecutive RoPE positions
and the raw softmax of the heads. The sampler drew from something else: decode steps reuse the
frame's last K prefix positions (§6.3), the last step of a frame is only fed at the next frame's
prefill, and every draw went through the processors of §6.4 (frame-local no-repeat mask including
the in-step mask, EOS suppression, temperature, top-k 50). ``score_rollout`` rebuilds exactly the
token sequence the sampler's KV cache held, runs it through the decoder in one differentiable
teacher-forced call with those positions, and applies the same processors, so each slot's
log-probability is that of the distribution the id was actually drawn from.

Exactness: exact (up to float rounding) when the rollout has no pad slots, i.e. every frame's
slots are real ids — the GRPO setting (no task-loss requirement) and oracle labels. With a
requirement, the per-sample semantics (``official_batching=False``) still match except after an
in-step stop, whose masked pick is not recorded in the output; coupled (official) batching feeds
pads that are visible within their frame, which a single key mask cannot express.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..generation import TOP_K
from ..model import AutoGaze, exact_float32


class PolicyScores(NamedTuple):
    """log_probs (L,): log-probability of each slot's id under the processed distribution;
    task_loss_prediction (L,): the head's prediction once slots 0..j of the frame are gazed
    (read where generation would compare it); log_dist (L,V) or None: the whole processed
    log-distribution of each slot (``return_distribution=True``). With ``return_inputs=True``,
    the final hidden states the two heads read, (L,D), and which of their K outputs each slot
    uses, (L,): gaze_inputs/gaze_index for the slot's draw (its logits are row block
    ``gaze_index[j]`` of ``lm_head(gaze_inputs[j])``), head_inputs/head_index for its task-loss
    prediction (``task_loss_prediction[j] = head.weight[head_index[j]] · head_inputs[j]``)."""
    log_probs: torch.Tensor
    task_loss_prediction: torch.Tensor
    log_dist: torch.Tensor | None
    gaze_inputs: torch.Tensor | None = None
    gaze_index: torch.Tensor | None = None
    head_inputs: torch.Tensor | None = None
    head_index: torch.Tensor | None = None


def _sequence(vision_b, ids, offs, frames, k, decoder):
    """One clip's token sequence as the sampler's cache held it.

    Returns embeddings (n,D), RoPE positions (n,), and per frame the tensor of 'step sources':
    index of the frame's last vision token, then of the last token of each step (the frame's final
    step is its leftover, fed before the next frame's vision tokens or appended at the end).
    """
    pieces, positions, sources = [], [], []
    cursor = count = 0  # sequence index / visible tokens so far
    pending = None  # (frame, leftover ids) not yet fed

    def feed_leftover():
        nonlocal cursor, count
        t, left = pending
        pieces.append(decoder.embed(left))
        positions.append(count + torch.arange(left.numel(), device=left.device))
        cursor += left.numel()
        count += left.numel()
        sources[t].append(cursor - 1)

    for t in range(frames):
        fr = ids[offs[t]:offs[t + 1]]
        n = fr.numel()
        if n < 1:
            raise ValueError(f"score_rollout: frame {t} of a clip has no gaze")
        if pending is not None:
            feed_leftover()
        p = vision_b.shape[1]
        pieces.append(vision_b[t])
        positions.append(count + torch.arange(p, device=fr.device))
        cursor += p
        count += p
        sources.append([cursor - 1])
        tail = count - k + torch.arange(k, device=fr.device)
        last_step = (n - 1) // k
        for s in range(last_step):
            pieces.append(decoder.embed(fr[s * k:(s + 1) * k]))
            positions.append(tail)
            cursor += k
            count += k
            sources[t].append(cursor - 1)
        pending = (t, fr[last_step * k:])
    feed_leftover()
    return torch.cat(pieces), torch.cat(positions), [torch.tensor(s) for s in sources]


def score_rollout(model: AutoGaze, video: torch.Tensor, ids: torch.Tensor,
                  frame_offsets: torch.Tensor, temperature: float = 1.0,
                  top_k: int | None = TOP_K, return_distribution: bool = False,
                  return_inputs: bool = False, vision: torch.Tensor | None = None) -> PolicyScores:
    """Differentiable log-probabilities of a rollout under the sampler's own distribution.

    video (B,T,3,H,W) preprocessed; ids (L,) frame-local ids and frame_offsets (B·T+1,) as in
    ``GazeOutput`` (padding-free). temperature/top_k: the sampler's settings (greedy generation:
    ``temperature=1, top_k=None``, which leaves the masks only). return_distribution /
    return_inputs: also return the per-slot distributions / the heads' inputs. vision: the
    precomputed ``model.embed(video)[0]`` (B,T,P,D), for passes that share a frozen encoder.
    Returns ``PolicyScores``.
    Exact when the rollout has no pad slots (see the module docstring). The slot's own id is
    never cut by top-k, so its log-probability stays finite when this pass rounds differently
    from the sampler's.
    """
    video = model._check_video(video)
    decoder = model.gazing_model.gaze_decoder
    cfg = decoder.cfg
    k, vocab, eos = cfg.num_multi_token_pred, cfg.vocab_size, cfg.eos_token_id
    batch, frames = video.shape[:2]
    if frame_offsets.numel() != batch * frames + 1:
        raise ValueError(f"frame_offsets must have B·T+1 = {batch * frames + 1} entries, got "
                         f"{frame_offsets.numel()}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= eos):
        raise ValueError(f"ids must be frame-local ids in [0, {eos}), got range "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    offs = frame_offsets.tolist()
    with exact_float32(model.dtype == torch.float32):
        if vision is None:
            vision, _ = model.embed(video)  # (B,T,P,D)
        seqs = [_sequence(vision[b], ids, offs[b * frames:(b + 1) * frames + 1], frames, k,
                          decoder) for b in range(batch)]
        length = max(s[0].shape[0] for s in seqs)
        x = torch.stack([F.pad(s[0], (0, 0, 0, length - s[0].shape[0])) for s in seqs])
        pos = torch.stack([F.pad(s[1], (0, length - s[1].shape[0])) for s in seqs])
        visible = torch.zeros(batch, length, dtype=torch.bool, device=video.device)
        for b, s in enumerate(seqs):
            visible[b, : s[0].shape[0]] = True
        hidden = decoder(x.to(vision.dtype), pos, visible, decoder.new_cache(batch, length))

        # per slot: the source (flat index into hidden) and head of its draw and of its
        # task-loss prediction (the next slot's source and head)
        src, head, nsrc, nhead = [], [], [], []
        for b, (_, _, sources) in enumerate(seqs):
            for t in range(frames):
                n = offs[b * frames + t + 1] - offs[b * frames + t]
                j = torch.arange(n)
                srcs = sources[t] + b * length
                src.append(srcs[j // k])
                head.append(j % k)
                nsrc.append(srcs[(j + 1) // k])
                nhead.append((j + 1) % k)
        dev = video.device
        src, head, nsrc, nhead = (torch.cat(v).to(dev) for v in (src, head, nsrc, nhead))
        flat = hidden.reshape(batch * length, -1)
        unique, inverse = torch.unique(torch.cat((src, nsrc)), return_inverse=True)
        states = flat[unique]
        logits_u, loss_u = decoder.heads(states)  # (U,K,V), (U,K) float32
        inv_src, inv_next = inverse[: src.numel()], inverse[src.numel():]
        logits = logits_u[inv_src, head]  # (L,V)
        loss_pred = loss_u[inv_next, nhead]

    # processors (§6.4): ids of earlier slots of the same frame (earlier steps and earlier in
    # the step) are banned, EOS is banned, then temperature and top-k
    frame_start = torch.repeat_interleave(frame_offsets[:-1].to(dev), frame_offsets.diff().to(dev),
                                          output_size=ids.numel())
    onehot = F.one_hot(ids.to(dev), vocab).to(torch.int32)
    inclusive = onehot.cumsum(0)
    before_frame = F.pad(inclusive, (0, 0, 1, 0))[frame_start]
    banned = (inclusive - onehot - before_frame) > 0
    banned[:, eos] = True
    scores = logits.masked_fill(banned, float("-inf"))
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None and top_k < vocab:
        kth = scores.detach().topk(top_k, dim=-1).values[:, -1:]
        # the drawn id always stays: in exact float32 it is among the top k anyway, but a pass
        # in other precision (bf16 autocast of training) can round it just below the k-th score,
        # and a −inf log-probability would turn the GRPO loss into nan
        scores = scores.masked_fill((scores < kth) & ~onehot.bool(), float("-inf"))
    log_dist = scores.log_softmax(-1)
    log_probs = log_dist.gather(1, ids.to(dev)[:, None]).squeeze(1)
    inputs = ()
    if return_inputs:
        states = states.detach()
        inputs = (states[inv_src], head, states[inv_next], nhead)
    return PolicyScores(log_probs, loss_pred, log_dist if return_distribution else None, *inputs)


def packed_to_padded(values: torch.Tensor, frame_offsets: torch.Tensor, batch: int, frames: int,
                     fill: float = 0.0) -> torch.Tensor:
    """Packed per-slot values (L,) → the padded layout of ``layout.from_ids`` (B,S): frame t has
    ``max_b count`` slots, each row holds its own slots first, then ``fill``."""
    counts = frame_offsets.diff().view(batch, frames)
    width = counts.max(0).values
    starts = F.pad(width.cumsum(0), (1, 0))[:-1]  # (T,)
    frame_of = torch.repeat_interleave(torch.arange(batch * frames, device=values.device),
                                       counts.flatten(), output_size=values.shape[0])
    slot = torch.arange(values.shape[0], device=values.device) - frame_offsets[frame_of]
    column = starts[frame_of % frames] + slot
    out = values.new_full((batch, int(width.sum())), fill)
    return out.index_put((frame_of // frames, column), values)

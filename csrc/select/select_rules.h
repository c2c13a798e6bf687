#pragma once
// The per-sample pieces of a selection step, shared by the CPU driver and the CUDA kernel so both
// run the same arithmetic in the same order. Batch coupling (spec §0.11) is the drivers' business.

#include <math.h>

#include <cstdint>

#include "common/host_device.h"
#include "select/select.h"

namespace autogaze::select {

AUTOGAZE_HOST_DEVICE inline float neg_inf() { return -__builtin_huge_valf(); }

AUTOGAZE_HOST_DEVICE inline float* score_row(const Params& p, int64_t b, int j) {
  return p.scores + (b * p.k + j) * p.vocab;
}

AUTOGAZE_HOST_DEVICE inline bool all_neg_inf(const float* row, int vocab) {
  for (int v = 0; v < vocab; ++v)
    if (row[v] != neg_inf()) return false;
  return true;
}

// The k-th largest value counting duplicates (-inf when fewer finite values than needed).
AUTOGAZE_HOST_DEVICE inline float kth_largest(const float* row, int vocab, int keep) {
  float bound = __builtin_huge_valf();
  int remaining = keep;
  while (true) {
    float top = neg_inf();
    for (int v = 0; v < vocab; ++v)
      if (row[v] < bound && row[v] > top) top = row[v];
    if (top == neg_inf()) return top;
    int ties = 0;
    for (int v = 0; v < vocab; ++v) ties += row[v] == top;
    if (ties >= remaining) return top;
    remaining -= ties;
    bound = top;
  }
}

// Scores of sample b: used ids and EOS banned; when sampling, temperature then top-k.
AUTOGAZE_HOST_DEVICE inline void prepare_rows(const Params& p, int64_t b) {
  const int eos = p.vocab - 1;
  for (int j = 0; j < p.k; ++j) {
    float* row = score_row(p, b, j);
    const float* src = p.logits + (b * p.k + j) * p.vocab;
    for (int v = 0; v < p.vocab; ++v) row[v] = p.used[b * p.vocab + v] ? neg_inf() : src[v];
    row[eos] = neg_inf();
    if (!p.uniforms) continue;
    if (p.temperature != 1.f)
      for (int v = 0; v < p.vocab; ++v) row[v] /= p.temperature;
    const float kth = kth_largest(row, p.vocab, p.top_k < p.vocab ? p.top_k : p.vocab);
    for (int v = 0; v < p.vocab; ++v)
      if (row[v] < kth) row[v] = neg_inf();
  }
}

AUTOGAZE_HOST_DEVICE inline int argmax_first(const float* row, int vocab) {
  int best = 0;
  for (int v = 1; v < vocab; ++v)
    if (row[v] > row[best]) best = v;
  return best;
}

// Inverse-CDF draw from softmax(row); an all -inf row draws uniformly.
AUTOGAZE_HOST_DEVICE inline int draw(const float* row, int vocab, float uniform) {
  const bool dead = all_neg_inf(row, vocab);
  float top = neg_inf();
  for (int v = 0; v < vocab; ++v) top = fmaxf(top, dead ? 0.f : row[v]);
  float total = 0.f;
  for (int v = 0; v < vocab; ++v) total += expf((dead ? 0.f : row[v]) - top);
  const float target = uniform * total;
  float cumulative = 0.f;
  for (int v = 0; v < vocab; ++v) {
    cumulative += expf((dead ? 0.f : row[v]) - top);
    if (cumulative > target) return v;
  }
  return vocab - 1;
}

// Head j of sample b: pick an id (kept only if `can`), ban it for the later heads.
AUTOGAZE_HOST_DEVICE inline void pick_head(const Params& p, int64_t b, int j, bool can) {
  const float* row = score_row(p, b, j);
  const int pick = p.uniforms ? draw(row, p.vocab, p.uniforms[b * p.k + j]) : argmax_first(row, p.vocab);
  p.picks[b * p.k + j] = can ? pick : p.vocab - 1;
  p.selected[b * p.k + j] = can;
  for (int later = j + 1; later < p.k; ++later) score_row(p, b, later)[pick] = neg_inf();
}

// Pads for finished samples and met requirements; returns the step's selected count and sets
// *over (budget reached or heads ran dry).
AUTOGAZE_HOST_DEVICE inline int64_t apply_stops(const Params& p, int64_t b, bool* over) {
  const int eos = p.vocab - 1;
  int64_t* ids = p.picks + b * p.k;
  int64_t count = 0;
  for (int j = 0; j < p.k; ++j) count += p.selected[b * p.k + j];
  if (p.finished[b])
    for (int j = 0; j < p.k; ++j) ids[j] = eos;
  if (p.requirement) {
    bool met = false;
    for (int j = 0; j < p.k; ++j) {
      const bool meet = p.selected[b * p.k + j] && p.loss_pred[b * p.k + j] <= p.requirement[b] &&
                        !(p.first && j == 0);
      if (meet) ids[j] = eos;
      met = met || meet;
    }
    if (met && !p.done[b]) p.finished[b] = 1;
  }
  *over = p.n[b] + count >= p.budget || count < p.k;
  return count;
}

// Appends the step to an active sample's frame, ends it if `ends`, writes the ids to feed.
AUTOGAZE_HOST_DEVICE inline void commit(const Params& p, int64_t b, int64_t count, bool ends) {
  const int eos = p.vocab - 1;
  const int64_t* ids = p.picks + b * p.k;
  if (!p.done[b]) {
    for (int j = 0; j < p.k; ++j) {
      if (!p.selected[b * p.k + j]) continue;
      // clamped into the row: the official slot rule at the end, and never before the row for
      // a (malformed) negative count, which the CPU binding rejects and CUDA cannot check
      int64_t slot = p.n[b] + j < p.token_width - 1 ? p.n[b] + j : p.token_width - 1;
      slot = slot < 0 ? 0 : slot;
      p.tokens[b * p.token_width + slot] = ids[j];
      p.used[b * p.vocab + ids[j]] = 1;
    }
    p.n[b] += count;
    if (ends) {
      for (int j = 0; j < p.k; ++j) p.leftover_ids[b * p.k + j] = ids[j];
      p.leftover_len[b] = count;
      p.done[b] = 1;
    }
  }
  p.used[b * p.vocab + eos] = 1;  // EOS is always banned; keeps the state canonical
  for (int j = 0; j < p.k; ++j) p.fed[b * p.k + j] = p.done[b] ? eos : ids[j];
}

}  // namespace autogaze::select

// CPU driver of the selection step: the per-sample rules of select_rules.h, with the batch
// coupling of the official mode as plain reductions between phases.

#include <vector>

#include "select/select.h"
#include "select/select_rules.h"

namespace autogaze::select {

void select_cpu(const Params& p) {
  const int64_t B = p.batch;
  for (int64_t b = 0; b < B; ++b) prepare_rows(p, b);

  std::vector<uint8_t> can(B, 1), exhausted(B);
  for (int j = 0; j < p.k; ++j) {
    bool all_exhausted = true;
    for (int64_t b = 0; b < B; ++b) {
      exhausted[b] = all_neg_inf(score_row(p, b, j), p.vocab);
      all_exhausted = all_exhausted && exhausted[b];
    }
    for (int64_t b = 0; b < B; ++b) {
      can[b] = can[b] && p.n[b] + j < p.budget && !(p.coupled ? all_exhausted : exhausted[b]);
      pick_head(p, b, j, can[b]);
    }
  }

  std::vector<int64_t> count(B);
  std::vector<uint8_t> over(B);
  bool any_over = false, all_over_or_finished = true;
  for (int64_t b = 0; b < B; ++b) {
    bool o;
    count[b] = apply_stops(p, b, &o);
    over[b] = o;
    any_over = any_over || o;
    all_over_or_finished = all_over_or_finished && (o || p.finished[b]);
  }
  for (int64_t b = 0; b < B; ++b) {
    const bool ends = p.coupled ? all_over_or_finished || any_over : over[b] || p.finished[b];
    commit(p, b, count[b], ends);
  }
}

}  // namespace autogaze::select

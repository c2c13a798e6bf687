// CUDA driver of the selection step. The per-sample rules (select_rules.h) run one thread per
// sample: a step is O(K·V) work per sample, small next to the decoder step it follows.
// Uncoupled samples are independent; in the coupled (official) mode one block holds the batch and
// the batch-wide reductions go through shared memory between phases.

#include <cuda_runtime.h>

#include "select/select.h"
#include "select/select_rules.h"

namespace autogaze::select {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) select_uncoupled(const Params p) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= p.batch) return;
  prepare_rows(p, b);
  bool can = true;
  for (int j = 0; j < p.k; ++j) {
    can = can && p.n[b] + j < p.budget && !all_neg_inf(score_row(p, b, j), p.vocab);
    pick_head(p, b, j, can);
  }
  bool over;
  const int64_t count = apply_stops(p, b, &over);
  commit(p, b, count, over || p.finished[b]);
}

// One block; thread t handles samples t, t + blockDim.x, ...
__global__ void __launch_bounds__(kThreads) select_coupled(const Params p) {
  __shared__ int not_exhausted, any_over, not_over_or_finished;
  constexpr int kMaxPerThread = 8;  // batch <= kThreads * kMaxPerThread (checked on the host)
  bool can[kMaxPerThread];
  bool over[kMaxPerThread];
  int64_t count[kMaxPerThread];
  int mine = 0;
  for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x, ++mine) {
    prepare_rows(p, b);
    can[mine] = true;
  }
  for (int j = 0; j < p.k; ++j) {
    if (threadIdx.x == 0) not_exhausted = 0;
    __syncthreads();
    for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x)
      if (!all_neg_inf(score_row(p, b, j), p.vocab)) atomicOr(&not_exhausted, 1);
    __syncthreads();
    int i = 0;
    for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x, ++i) {
      can[i] = can[i] && p.n[b] + j < p.budget && not_exhausted;
      pick_head(p, b, j, can[i]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) any_over = 0, not_over_or_finished = 0;
  __syncthreads();
  int i = 0;
  for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x, ++i) {
    count[i] = apply_stops(p, b, &over[i]);
    if (over[i]) atomicOr(&any_over, 1);
    if (!over[i] && !p.finished[b]) atomicOr(&not_over_or_finished, 1);
  }
  __syncthreads();
  i = 0;
  for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x, ++i)
    commit(p, b, count[i], any_over || !not_over_or_finished);
}

}  // namespace

void select_cuda(const Params& p, CUstream_st* stream) {
  if (p.batch == 0) return;
  if (p.coupled) {
    select_coupled<<<1, kThreads, 0, stream>>>(p);
  } else {
    const unsigned blocks = static_cast<unsigned>((p.batch + kThreads - 1) / kThreads);
    select_uncoupled<<<blocks, kThreads, 0, stream>>>(p);
  }
}

}  // namespace autogaze::select

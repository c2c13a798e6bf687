// CUDA driver of varlen attention, flash-attention style (first version: no tensor cores).
//
// One block per (tile of kQueryTile = 64 queries, head), 256 threads: 4 adjacent lanes per query,
// lane `sub` owning the dims d = sub + 4t (t < kPer) of q and of the float32 accumulator. The key
// loop runs over the aligned key tiles of attention_rules.h from the tile holding min(lo) to
// max(hi) of the block's queries; a tile no query of the block sees is skipped by the whole block,
// and each query skips the tiles outside its own range. A tile's K and V rows (converted to
// float32) and the scores of the tile are staged in shared memory; the per-element math (tile
// max, rescale, weights, final division) is the rules header's, as on the CPU.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/cuda_convert.cuh"

#include "attention/attention.h"
#include "attention/attention_rules.h"

namespace autogaze::attention {
namespace {

constexpr int kLanesPerQuery = 4;
constexpr int kThreads = kQueryTile * kLanesPerQuery;  // 256
constexpr int kScoreStride = kKeyTile + 1;             // padded row of the score tile

// Shared memory: K tile and V tile (kKeyTile x 4*kPer floats each), then the score tile.
template <int kPer>
constexpr size_t shared_bytes() {
  return (2 * kKeyTile * kLanesPerQuery * kPer + kQueryTile * kScoreStride) * sizeof(float);
}

// head_dim <= 4 * kPer.
template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads) attention_kernel(const Params p) {
  constexpr int kWidth = kLanesPerQuery * kPer;  // shared K / V row width (>= head_dim)
  extern __shared__ float shared[];
  float* ks = shared;
  float* vs = ks + kKeyTile * kWidth;
  float* scores = vs + kKeyTile * kWidth;
  __shared__ long long hull_lo, hull_hi;

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* out = static_cast<T*>(p.out);
  const int D = p.head_dim;
  const int tid = threadIdx.x;
  const int qi = tid / kLanesPerQuery;
  const int sub = tid % kLanesPerQuery;
  const unsigned group_mask = 0xFu << (tid & 31 & ~(kLanesPerQuery - 1));  // this query's 4 lanes
  const int h = blockIdx.y;
  const int64_t kv_row = static_cast<int64_t>(p.kv_heads) * D;
  const int64_t kv_offset = static_cast<int64_t>(h / (p.heads / p.kv_heads)) * D;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kQueryTile + qi;
  const bool has_query = i < p.length;

  int64_t lo = 0, hi = 0;
  if (has_query) {
    lo = p.key_lo[i];
    hi = p.key_hi[i];
  }
  if (tid == 0) {
    hull_lo = p.length;
    hull_hi = 0;
  }
  __syncthreads();
  if (has_query && sub == 0 && lo < hi) {
    atomicMin(&hull_lo, static_cast<long long>(lo));
    atomicMax(&hull_hi, static_cast<long long>(hi));
  }
  __syncthreads();
  const int64_t block_lo = hull_lo, block_hi = hull_hi;

  float qr[kPer], acc[kPer];
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int d = sub + kLanesPerQuery * t;
    qr[t] = has_query && d < D ? to_float(q[(i * p.heads + h) * D + d]) : 0.f;
    acc[t] = 0.f;
  }
  Softmax s = softmax_start();

  for (int64_t t0 = first_tile(block_lo); t0 < block_hi; t0 += kKeyTile) {
    const bool need = has_query && lo < t0 + kKeyTile && hi > t0;
    if (!__syncthreads_or(need)) continue;  // no query of the block sees this tile

    for (int e = tid; e < kKeyTile * kWidth; e += kThreads) {
      const int j = e / kWidth, d = e % kWidth;
      const int64_t key = t0 + j;
      float kf = 0.f, vf = 0.f;
      if (key < p.length && d < D) {
        kf = to_float(k[key * kv_row + kv_offset + d]);
        vf = to_float(v[key * kv_row + kv_offset + d]);
      }
      ks[e] = kf;
      vs[e] = vf;
    }
    __syncthreads();

    if (need) {  // uniform over the query's 4 lanes
      const int jb = tile_begin(t0, lo), je = tile_end(t0, hi);
      float* row = scores + qi * kScoreStride;
      float tile_max = neg_inf();
      for (int j = jb; j < je; ++j) {
        const float* kr = ks + j * kWidth + sub;
        float dot = 0.f;
#pragma unroll
        for (int t = 0; t < kPer; ++t) dot += qr[t] * kr[kLanesPerQuery * t];
        dot += __shfl_xor_sync(group_mask, dot, 1);
        dot += __shfl_xor_sync(group_mask, dot, 2);
        const float score = dot * p.scale;
        tile_max = fmaxf(tile_max, score);
        if (sub == 0) row[j] = score;
      }
      __syncwarp(group_mask);
      const float alpha = softmax_rescale(s, tile_max);
#pragma unroll
      for (int t = 0; t < kPer; ++t) acc[t] *= alpha;
      for (int j = jb; j < je; ++j) {
        const float w = softmax_weight(s, row[j]);
        const float* vr = vs + j * kWidth + sub;
#pragma unroll
        for (int t = 0; t < kPer; ++t) acc[t] += w * vr[kLanesPerQuery * t];
      }
    }
    __syncthreads();  // the next tile overwrites ks, vs and the scores
  }

  if (!has_query) return;
  const float inv = softmax_finish(s);
  T* orow = out + (i * p.heads + h) * D;
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int d = sub + kLanesPerQuery * t;
    if (d < D) orow[d] = from_float<T>(acc[t] * inv);
  }
}

template <typename T, int kPer>
void launch(const Params& p, cudaStream_t stream) {
  constexpr size_t bytes = shared_bytes<kPer>();
  auto kernel = attention_kernel<T, kPer>;
  if (bytes > 48 * 1024)  // above the default limit: opt in (sm_80: up to 163 KiB per block)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  const dim3 grid(static_cast<unsigned>((p.length + kQueryTile - 1) / kQueryTile),
                  static_cast<unsigned>(p.heads));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
}

template <typename T>
void dispatch_head_dim(const Params& p, cudaStream_t stream) {
  if (p.head_dim <= 32) return launch<T, 8>(p, stream);
  if (p.head_dim <= 64) return launch<T, 16>(p, stream);
  if (p.head_dim <= 96) return launch<T, 24>(p, stream);
  return launch<T, 32>(p, stream);  // head_dim <= kMaxHeadDimCuda = 128 (checked by the bindings)
}

}  // namespace

void attention_cuda(const Params& params, CUstream_st* stream) {
  if (params.length == 0 || params.heads == 0) return;
  switch (params.dtype) {
    case DType::kFloat32: return dispatch_head_dim<float>(params, stream);
    case DType::kBFloat16: return dispatch_head_dim<__nv_bfloat16>(params, stream);
    case DType::kFloat16: return dispatch_head_dim<__half>(params, stream);
  }
}

}  // namespace autogaze::attention

// CUDA driver of decode_step (first version: correctness first, no tensor cores).
//
// One block of 256 threads (8 warps) per sample; the sample's float32 scratch (activations of the
// n tokens, q, attention output, MLP hidden) lives in its slice of the global workspace (L1 / L2
// resident), weights are read from global memory (L2 resident across blocks). Stages are
// separated by __syncthreads (global writes of a block are visible to the block after it):
//   matvec: warps over output rows, lanes over the input dim, 4 tokens per pass (each weight
//           element read once per 4 tokens), warp-shuffle reduction;
//   attention: warps over (query, head) pairs; per 32-slot tile each lane scores one key, the
//           tile max / sum are warp reductions, the streaming softmax is attention_rules.h's, and
//           lanes own the head dims d = lane + 32 i of the accumulator (head_dim <= 128).
// The per-element math (RMSNorm, RoPE, SiLU gate, residuals, visibility) is decode_rules.h's, as
// on the CPU.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/cuda_convert.cuh"

#include "decode/decode.h"
#include "decode/decode_rules.h"

namespace autogaze::decode {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kDimsPerLane = kMaxHeadDimCuda / 32;  // 4

template <typename T>
struct DeviceRound {
  __device__ static float round(float v) { return to_float(from_float<T>(v)); }
};
template <>
struct DeviceRound<float> {
  __device__ static float round(float v) { return v; }
};

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// For o < rows, j < n: epilogue(j, o, sum_d W[o, d] * X[j*xs + d]) (called by lane 0).
template <typename T, typename Epilogue>
__device__ void matvec(const T* __restrict__ W, int rows, int cols, const float* X, int xs, int n,
                       Epilogue epilogue) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int o = warp; o < rows; o += kWarps) {
    const T* w = W + static_cast<int64_t>(o) * cols;
    for (int j = 0; j < n; j += 4) {
      const int m = n - j < 4 ? n - j : 4;
      float a[4] = {0.f, 0.f, 0.f, 0.f};
      for (int d = lane; d < cols; d += 32) {
        const float wd = to_float(w[d]);
#pragma unroll
        for (int t = 0; t < 4; ++t)
          if (t < m) a[t] += wd * X[static_cast<int64_t>(j + t) * xs + d];
      }
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const float s = warp_sum(a[t]);
        if (lane == 0 && t < m) epilogue(j + t, o, s);
      }
    }
  }
}

// out[j*D + d] = RMSNorm(x[j*D + d]) with weight w, rows j in [j0, n): a warp per row.
template <typename T>
__device__ void rmsnorm_rows(const float* x, const T* w, int j0, int n, int D, float eps, float* out) {
  using R = DeviceRound<T>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int j = j0 + warp; j < n; j += kWarps) {
    const float* row = x + static_cast<int64_t>(j) * D;
    float sum = 0.f;
    for (int d = lane; d < D; d += 32) sum += row[d] * row[d];
    const float factor = rms_factor(warp_sum(sum), D, eps);
    float* o = out + static_cast<int64_t>(j) * D;
    for (int d = lane; d < D; d += 32) o[d] = rms_element<R>(row[d], factor, to_float(w[d]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) decode_kernel(const Params p) {
  using R = DeviceRound<T>;
  const int64_t b = blockIdx.x;
  const Workspace ws = workspace_layout(p);
  float* base = p.workspace + b * p.workspace_per_sample;
  const int n = p.n, D = p.hidden, H = p.heads, Hkv = p.kv_heads, hd = p.head_dim, I = p.intermediate;
  const int qw = H * hd, kvw = Hkv * hd, group = H / Hkv;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  float* x = base + ws.x;
  float* xn = base + ws.xn;
  float* q = base + ws.q;
  float* qr = base + ws.qr;
  float* kn = base + ws.kn;
  float* vn = base + ws.vn;
  float* att = base + ws.att;
  float* gate = base + ws.gate;
  float* up = base + ws.up;
  float* cosv = base + ws.cos;
  float* sinv = base + ws.sin;
  uint8_t* mask = p.key_mask + b * p.capacity;
  const int64_t end = p.cache_len + n;
  __shared__ long long first_visible;

  // Inputs, key mask of the new slots, RoPE tables.
  const T* xin = static_cast<const T*>(p.x) + b * n * D;
  for (int e = tid; e < n * D; e += kThreads) x[e] = to_float(xin[e]);
  for (int j = tid; j < n; j += kThreads) mask[p.cache_len + j] = p.visible[b * n + j] ? 1 : 0;
  for (int e = tid; e < n * hd; e += kThreads)
    rope_cos_sin<R>(p.positions[b * n + e / hd], p.inv_freq, hd, e % hd, cosv + e, sinv + e);
  if (tid == 0) first_visible = end;
  __syncthreads();
  for (int64_t t = tid; t < end; t += kThreads)
    if (mask[t]) {
      atomicMin(&first_visible, static_cast<long long>(t));
      break;
    }
  __syncthreads();
  const int64_t first = first_visible;
  const float scale = rsqrtf(static_cast<float>(hd));

  for (int l = 0; l < p.layers; ++l) {
    const Layer& L = p.layer[l];
    rmsnorm_rows(x, static_cast<const T*>(L.input_norm), 0, n, D, p.eps, xn);
    __syncthreads();
    matvec(static_cast<const T*>(L.q), qw, D, xn, D, n, [&](int j, int o, float a) { q[j * qw + o] = R::round(a); });
    matvec(static_cast<const T*>(L.k), kvw, D, xn, D, n, [&](int j, int o, float a) { kn[j * kvw + o] = R::round(a); });
    matvec(static_cast<const T*>(L.v), kvw, D, xn, D, n, [&](int j, int o, float a) { vn[j * kvw + o] = R::round(a); });
    __syncthreads();
    // RoPE; the new keys and values go to the cache.
    for (int e = tid; e < n * qw; e += kThreads) {
      const int j = e / qw, h = (e % qw) / hd, i = e % hd;
      qr[e] = rope_element<R>(q + j * qw + h * hd, hd, i, cosv[j * hd + i], sinv[j * hd + i]);
    }
    for (int e = tid; e < n * kvw; e += kThreads) {
      const int j = e / kvw, g = (e % kvw) / hd, i = e % hd;
      const int64_t at = cache_offset(l, b, g, p.cache_len + j, p.batch, Hkv, p.capacity, hd) + i;
      static_cast<T*>(p.cache_k)[at] =
          from_float<T>(rope_element<R>(kn + j * kvw + g * hd, hd, i, cosv[j * hd + i], sinv[j * hd + i]));
      static_cast<T*>(p.cache_v)[at] = from_float<T>(vn[e]);
    }
    __syncthreads();
    // Attention: a warp per (query, head).
    for (int pair = warp; pair < n * H; pair += kWarps) {
      const int j = pair / H, h = pair % H, g = h / group;
      const int64_t slot = p.cache_len + j;
      const float* qv = qr + j * qw + h * hd;
      const int64_t kv_base = cache_offset(l, b, g, 0, p.batch, Hkv, p.capacity, hd);
      const T* K = static_cast<const T*>(p.cache_k) + kv_base;
      const T* V = static_cast<const T*>(p.cache_v) + kv_base;
      Softmax s = softmax_start();
      float acc[kDimsPerLane];
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) acc[c] = 0.f;
      for (int64_t t0 = 0; t0 <= slot; t0 += 32) {
        const int64_t t = t0 + lane;
        const bool ok = t < end && key_allowed(t, slot, mask[t < end ? t : 0], first);
        float score = neg_inf();
        if (ok) {
          const T* kr = K + t * hd;
          float dot = 0.f;
          for (int d = 0; d < hd; ++d) dot += qv[d] * to_float(kr[d]);
          score = dot * scale;
        }
        const float tile_max = warp_max(score);
        if (tile_max == neg_inf()) continue;  // warp-uniform: nothing visible in this tile
        const float alpha = softmax_rescale(s, tile_max);
        const float w = ok ? expf(score - s.max) : 0.f;
        s.sum += warp_sum(w);
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) acc[c] *= alpha;
        for (int i = 0; i < 32; ++i) {
          const float wi = __shfl_sync(0xffffffffu, w, i);
          if (wi == 0.f) continue;  // warp-uniform
          const T* vr = V + (t0 + i) * hd;
#pragma unroll
          for (int c = 0; c < kDimsPerLane; ++c) {
            const int d = lane + 32 * c;
            if (d < hd) acc[c] += wi * to_float(vr[d]);
          }
        }
      }
      const float inv = softmax_finish(s);
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) att[j * qw + h * hd + d] = R::round(acc[c] * inv);
      }
    }
    __syncthreads();
    matvec(static_cast<const T*>(L.o), D, qw, att, qw, n,
           [&](int j, int o, float a) { x[j * D + o] = residual<R>(x[j * D + o], a); });
    __syncthreads();
    rmsnorm_rows(x, static_cast<const T*>(L.post_norm), 0, n, D, p.eps, xn);
    __syncthreads();
    matvec(static_cast<const T*>(L.gate), I, D, xn, D, n, [&](int j, int o, float a) { gate[j * I + o] = R::round(a); });
    matvec(static_cast<const T*>(L.up), I, D, xn, D, n, [&](int j, int o, float a) { up[j * I + o] = R::round(a); });
    __syncthreads();
    for (int e = tid; e < n * I; e += kThreads) gate[e] = silu_gate<R>(gate[e], up[e]);
    __syncthreads();
    matvec(static_cast<const T*>(L.down), D, I, gate, I, n,
           [&](int j, int o, float a) { x[j * D + o] = residual<R>(x[j * D + o], a); });
    __syncthreads();
  }

  // Heads of the last token.
  rmsnorm_rows(x, static_cast<const T*>(p.final_norm), n - 1, n, D, p.eps, xn);
  __syncthreads();
  const float* last = xn + static_cast<int64_t>(n - 1) * D;
  float* logits = p.logits + b * static_cast<int64_t>(p.k) * p.vocab;
  matvec(static_cast<const T*>(p.lm_head), p.k * p.vocab, D, last, D, 1,
         [&](int, int o, float a) { logits[o] = R::round(a); });
  float* loss = p.loss_pred + b * p.k;
  matvec(static_cast<const T*>(p.loss_head), p.k, D, last, D, 1, [&](int, int o, float a) { loss[o] = R::round(a); });
}

}  // namespace

void decode_cuda(const Params& p, CUstream_st* stream) {
  if (p.batch == 0) return;
  const dim3 grid(static_cast<unsigned>(p.batch));
  switch (p.dtype) {
    case DType::kFloat32: decode_kernel<float><<<grid, kThreads, 0, stream>>>(p); return;
    case DType::kBFloat16: decode_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p); return;
    case DType::kFloat16: decode_kernel<__half><<<grid, kThreads, 0, stream>>>(p); return;
  }
}

}  // namespace autogaze::decode

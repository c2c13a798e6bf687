#pragma once
// One incremental step of the gaze decoder (a small LLaMA with multi-token heads): params and launch
// declarations (no torch, no CUDA headers). The ground truth is autogaze_ext.decoder.GazeDecoder:
// `forward(x, positions, visible, cache)` with `cache.length == cache_len`, then
// `heads(hidden[:, -1])`.
//
// The n fed tokens of each sample run through every layer (their K / V are appended to the cache
// at slots [cache_len, cache_len + n), their key mask set from `visible`); only the last token's
// final hidden state goes through the heads. All math is float32, rounded to the element type T
// (the dtype of x, the weights and the cache) at the points where the reference rounds.

#include <cstdint>

#include "common/dtype.h"
#include "common/host_device.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace autogaze::decode {

constexpr int kMaxLayers = 32;  // keeps Params (a CUDA kernel argument) well under 4 KiB

// The weights of one decoder layer, each contiguous, of the element type T.
struct Layer {
  const void* input_norm;  // (D,)
  const void* q;           // (H*hd, D)
  const void* k;           // (Hkv*hd, D)
  const void* v;           // (Hkv*hd, D)
  const void* o;           // (D, H*hd)
  const void* post_norm;   // (D,)
  const void* gate;        // (I, D)
  const void* up;          // (I, D)
  const void* down;        // (D, I)
};

struct Params {
  // inputs
  const void* x;             // (B, n, D) T
  const int64_t* positions;  // (B, n) RoPE positions
  const uint8_t* visible;    // (B, n) key visibility of the new slots
  Layer layer[kMaxLayers];
  const void* final_norm;  // (D,)
  const void* lm_head;     // (K*V, D)
  const void* loss_head;   // (K, D)
  const float* inv_freq;   // (hd/2,)

  // cache, updated in place (slots [cache_len, cache_len + n))
  void* cache_k;      // (layers, B, Hkv, capacity, hd) T
  void* cache_v;      // (layers, B, Hkv, capacity, hd) T
  uint8_t* key_mask;  // (B, capacity)

  // outputs and workspace
  float* logits;     // (B, K, V)
  float* loss_pred;  // (B, K)
  float* workspace;  // (B, workspace_per_sample), see Workspace

  DType dtype;
  int64_t batch, cache_len, capacity;
  int n, layers, hidden, heads, kv_heads, head_dim, intermediate, k, vocab;
  float eps;
  int64_t workspace_per_sample;  // floats
};

// The float32 scratch of one sample: offsets (in floats) of its regions.
struct Workspace {
  int64_t x, xn, q, qr, kn, vn, att, gate, up, cos, sin, softmax, total;
};

// Regions start at multiples of 16 floats (64 bytes).
AUTOGAZE_HOST_DEVICE inline int64_t workspace_region(int64_t size) { return (size + 15) / 16 * 16; }

AUTOGAZE_HOST_DEVICE inline Workspace workspace_layout(int n, int hidden, int heads, int kv_heads, int head_dim,
                                                       int intermediate) {
  const int64_t nn = n;
  Workspace w{};
  w.x = 0;                                                             // residual stream
  w.xn = w.x + workspace_region(nn * hidden);                          // normed input of the matmuls
  w.q = w.xn + workspace_region(nn * hidden);                          // q before RoPE
  w.qr = w.q + workspace_region(nn * heads * head_dim);                // q after RoPE
  w.kn = w.qr + workspace_region(nn * heads * head_dim);               // new k before RoPE
  w.vn = w.kn + workspace_region(nn * kv_heads * head_dim);            // new v
  w.att = w.vn + workspace_region(nn * kv_heads * head_dim);           // attention output
  w.gate = w.att + workspace_region(nn * heads * head_dim);            // MLP gate, then silu(gate) * up
  w.up = w.gate + workspace_region(nn * intermediate);                 // MLP up
  w.cos = w.up + workspace_region(nn * intermediate);                  // RoPE tables (n, head_dim)
  w.sin = w.cos + workspace_region(nn * head_dim);
  w.softmax = w.sin + workspace_region(nn * head_dim);                 // CPU: (max, sum) per (query, head)
  w.total = w.softmax + workspace_region(nn * heads * 2);
  return w;
}

AUTOGAZE_HOST_DEVICE inline Workspace workspace_layout(const Params& p) {
  return workspace_layout(p.n, p.hidden, p.heads, p.kv_heads, p.head_dim, p.intermediate);
}

// CPU: samples [begin, end). Requires head_dim <= kMaxHeadDimCpu.
void decode_cpu(const Params& params, int64_t begin, int64_t end);

// CUDA: enqueues the whole step on `stream` (one block per sample). Requires head_dim <= 128.
void decode_cuda(const Params& params, CUstream_st* stream);

constexpr int kMaxHeadDimCuda = 128;
constexpr int kMaxHeadDimCpu = 256;  // the CPU driver's transposed key tile

}  // namespace autogaze::decode

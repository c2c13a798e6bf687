#pragma once
// Attention over packed varlen tokens with a visible key range per query: params and launch
// declarations (no torch, no CUDA headers). The ground truth is
// autogaze_ext.reference.varlen_attention.
//
// Query i (row i of the packed sequence) attends to the keys [key_lo[i], key_hi[i]) of the same
// packed sequence. Tokens are packed clip-major, then frame-major, so every attention mode
// (block_causal, causal, bidirectional, frame) is one contiguous key range per query
// (autogaze_ext.ops.key_ranges); no mask is ever built.

#include <cstdint>

#include "common/dtype.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace autogaze::attention {

struct Params {
  const void* q;  // (L, heads, head_dim), contiguous, dtype
  const void* k;  // (L, kv_heads, head_dim), contiguous, dtype
  const void* v;  // (L, kv_heads, head_dim), contiguous, dtype
  void* out;      // (L, heads, head_dim), contiguous, dtype
  const int64_t* key_lo;  // (L,): first visible key of each query
  const int64_t* key_hi;  // (L,): one past the last visible key; 0 <= lo < hi <= L
  DType dtype;
  int64_t length;  // L
  int heads, kv_heads, head_dim;  // heads % kv_heads == 0 (grouped-query attention)
  float scale;     // multiplies q·k before the softmax
};

// CPU: rows [begin, end) of the L * heads (query, head) rows, row = i * heads + h.
void attention_cpu(const Params& params, int64_t begin, int64_t end);

// CUDA: enqueues the whole op on `stream`. Requires head_dim <= kMaxHeadDimCuda and
// heads <= 65535; key ranges are trusted (not checked on the device).
void attention_cuda(const Params& params, CUstream_st* stream);

constexpr int kMaxHeadDimCuda = 128;

}  // namespace autogaze::attention

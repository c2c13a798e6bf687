#pragma once
// The per-element math of a decode step, shared by the CPU driver and the CUDA kernel so both run
// the same arithmetic. `R` is a rounding policy: `R::round(float)` rounds a float32 to the element
// type T and back (the identity for float32), applied where the reference computes in T.
// Dot products (matvecs, attention scores) are the drivers' business: they accumulate in float32
// in an order suited to the hardware. The streaming softmax is attention_rules.h's.

#include <math.h>

#include <cstdint>

#include "attention/attention_rules.h"
#include "common/host_device.h"

namespace autogaze::decode {

using attention::neg_inf;
using attention::Softmax;
using attention::softmax_finish;
using attention::softmax_rescale;
using attention::softmax_start;

// RMSNorm: the factor of a row from the sum of its squares (float32): rsqrt(mean(x²) + eps).
AUTOGAZE_HOST_DEVICE inline float rms_factor(float sum_squares, int dim, float eps) {
  return 1.f / sqrtf(sum_squares / static_cast<float>(dim) + eps);
}

// RMSNorm of one element: (x * factor) cast to T, times the weight (in T).
template <class R>
AUTOGAZE_HOST_DEVICE inline float rms_element(float x, float factor, float weight) {
  return R::round(R::round(x * factor) * weight);
}

// RoPE: cos / sin of element i (< head_dim) at `position`: angles float32(position) * inv_freq
// duplicated to head_dim, cast to T.
template <class R>
AUTOGAZE_HOST_DEVICE inline void rope_cos_sin(int64_t position, const float* inv_freq, int head_dim, int i,
                                              float* c, float* s) {
  const int half = head_dim / 2;
  const float angle = static_cast<float>(position) * inv_freq[i < half ? i : i - half];
  *c = R::round(cosf(angle));
  *s = R::round(sinf(angle));
}

// RoPE of element i of a head vector v (rotate-half): v*cos + rotate_half(v)*sin, in T.
template <class R>
AUTOGAZE_HOST_DEVICE inline float rope_element(const float* v, int head_dim, int i, float c, float s) {
  const int half = head_dim / 2;
  const float rotated = i < half ? -v[i + half] : v[i - half];
  return R::round(R::round(v[i] * c) + R::round(rotated * s));
}

// MLP gate: silu(gate) * up, in T.
template <class R>
AUTOGAZE_HOST_DEVICE inline float silu_gate(float gate, float up) {
  return R::round(R::round(gate / (1.f + expf(-gate))) * up);
}

// Residual add in T: x + round(y).
template <class R>
AUTOGAZE_HOST_DEVICE inline float residual(float x, float y) {
  return R::round(x + R::round(y));
}

// May the query in slot `query_slot` attend to the key in slot `t`? Causal (t <= query_slot) and
// the key's mask set; a query with no visible key at all (first_visible > query_slot, the first
// slot whose mask is set) sees only its own slot, as the reference forces.
AUTOGAZE_HOST_DEVICE inline bool key_allowed(int64_t t, int64_t query_slot, bool mask, int64_t first_visible) {
  return t <= query_slot && (mask || (t == query_slot && first_visible > query_slot));
}

// Index of the first element of (layer, b, kv head, slot) in a cache (layers, B, Hkv, capacity, hd).
AUTOGAZE_HOST_DEVICE inline int64_t cache_offset(int layer, int64_t b, int kv_head, int64_t slot, int64_t batch,
                                                 int kv_heads, int64_t capacity, int head_dim) {
  return (((static_cast<int64_t>(layer) * batch + b) * kv_heads + kv_head) * capacity + slot) * head_dim;
}

}  // namespace autogaze::decode

// CPU driver of decode_step: one sample at a time (the bindings spread samples over threads).
// Matvecs read each weight row once for all n tokens (4 tokens per pass); attention runs per kv
// head over 64-slot key tiles: the tile's keys are transposed once to float32 and scored against
// all the queries of the group (n tokens x H/Hkv heads), then the streaming softmax of
// attention_rules.h and the value accumulation per query. The hot float32 loops are compiled for
// AVX-512 / AVX2 / baseline and picked at load time (GCC target_clones).

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/float_convert.h"
#include "decode/decode.h"
#include "decode/decode_rules.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define AUTOGAZE_CLONES __attribute__((flatten, target_clones("avx512f", "avx2", "default")))
#else
#define AUTOGAZE_CLONES
#endif

namespace autogaze::decode {
namespace {

constexpr int kTile = 64;  // key slots per attention tile

// exp(x) for x <= 0 (softmax weights), vectorizable: Cephes' expf range reduction and polynomial
// (within 2 ulp of expf); x below -87 gives exp(-87) (the caller zeroes masked keys).
inline float exp_nonpositive(float x) {
  x = x < -87.f ? -87.f : x;
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23)
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.f;
  return y * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
}

template <typename T>
struct HostRound {
  static float round(float v) { return to_float(from_float<T>(v)); }
};
template <>
struct HostRound<float> {
  static float round(float v) { return v; }
};

// Y[j*ys + o] = epilogue(j, o, sum_d W[o, d] * X[j*xs + d]) for o < rows, j < n.
template <typename T, typename Epilogue>
inline void matvec(const T* __restrict W, int rows, int cols, const float* __restrict X, int xs, int n,
                   Epilogue&& epilogue) {
  for (int o = 0; o < rows; ++o) {
    const T* __restrict w = W + static_cast<int64_t>(o) * cols;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* __restrict x0 = X + static_cast<int64_t>(j) * xs;
      const float* __restrict x1 = x0 + xs;
      const float* __restrict x2 = x1 + xs;
      const float* __restrict x3 = x2 + xs;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int d = 0; d < cols; ++d) {
        const float wd = to_float(w[d]);
        a0 += wd * x0[d];
        a1 += wd * x1[d];
        a2 += wd * x2[d];
        a3 += wd * x3[d];
      }
      epilogue(j, o, a0);
      epilogue(j + 1, o, a1);
      epilogue(j + 2, o, a2);
      epilogue(j + 3, o, a3);
    }
    for (; j < n; ++j) {
      const float* __restrict x0 = X + static_cast<int64_t>(j) * xs;
      float a0 = 0.f;
#pragma omp simd reduction(+ : a0)
      for (int d = 0; d < cols; ++d) a0 += to_float(w[d]) * x0[d];
      epilogue(j, o, a0);
    }
  }
}

// out[j*D + d] = RMSNorm(x[j*D + d]) with weight w, for j < n.
template <typename T>
inline void rmsnorm_rows(const float* x, const T* w, int n, int D, float eps, float* out) {
  using R = HostRound<T>;
  for (int j = 0; j < n; ++j) {
    const float* row = x + static_cast<int64_t>(j) * D;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int d = 0; d < D; ++d) sum += row[d] * row[d];
    const float factor = rms_factor(sum, D, eps);
    float* o = out + static_cast<int64_t>(j) * D;
    for (int d = 0; d < D; ++d) o[d] = rms_element<R>(row[d], factor, to_float(w[d]));
  }
}

// Attention of the queries of one kv head of one sample over the slots [0, cache_len + n).
template <typename T>
void attention_group(const Params& p, const Workspace& ws, float* base, int64_t b, int layer, int g,
                     int64_t first_visible) {
  using R = HostRound<T>;
  const int hd = p.head_dim, H = p.heads, group = p.heads / p.kv_heads, n = p.n;
  const int64_t end = p.cache_len + n;
  const float scale = 1.f / sqrtf(static_cast<float>(hd));
  const int64_t base_kv = cache_offset(layer, b, g, 0, p.batch, p.kv_heads, p.capacity, hd);
  const T* K = static_cast<const T*>(p.cache_k) + base_kv;
  const T* V = static_cast<const T*>(p.cache_v) + base_kv;
  const uint8_t* mask = p.key_mask + b * p.capacity;
  float* softmax = base + ws.softmax;
  alignas(64) float kt[kMaxHeadDimCpu][kTile];
  alignas(64) float scores[kTile];
  alignas(64) float weights[kTile];
  const int rows = n * group;
  for (int r = 0; r < rows; ++r) {
    const int j = r / group, h = g * group + r % group;
    float* acc = base + ws.att + (static_cast<int64_t>(j) * H + h) * hd;
    std::fill(acc, acc + hd, 0.f);
    softmax[2 * (j * H + h)] = neg_inf();
    softmax[2 * (j * H + h) + 1] = 0.f;
  }
  for (int64_t t0 = 0; t0 < end; t0 += kTile) {
    const int te = static_cast<int>(std::min<int64_t>(kTile, end - t0));
    for (int i = 0; i < te; ++i) {
      const T* krow = K + (t0 + i) * hd;
      for (int d = 0; d < hd; ++d) kt[d][i] = to_float(krow[d]);
    }
    for (int i = te; i < kTile; ++i)
      for (int d = 0; d < hd; ++d) kt[d][i] = 0.f;
    for (int r = 0; r < rows; ++r) {
      const int j = r / group, h = g * group + r % group;
      const int64_t slot = p.cache_len + j;
      if (t0 > slot) continue;
      const float* q = base + ws.qr + (static_cast<int64_t>(j) * H + h) * hd;
      for (int i = 0; i < kTile; ++i) scores[i] = 0.f;
      for (int d = 0; d < hd; ++d) {
        const float qd = q[d] * scale;
#pragma omp simd
        for (int i = 0; i < kTile; ++i) scores[i] += qd * kt[d][i];
      }
      float tile_max = neg_inf();
      for (int i = 0; i < te; ++i) {
        if (!key_allowed(t0 + i, slot, mask[t0 + i], first_visible)) {
          scores[i] = neg_inf();
          continue;
        }
        tile_max = scores[i] > tile_max ? scores[i] : tile_max;
      }
      if (tile_max == neg_inf()) continue;  // nothing visible: the state is unchanged
      Softmax s{softmax[2 * (j * H + h)], softmax[2 * (j * H + h) + 1]};
      const float alpha = softmax_rescale(s, tile_max);
      float* acc = base + ws.att + (static_cast<int64_t>(j) * H + h) * hd;
      if (alpha != 1.f)
        for (int d = 0; d < hd; ++d) acc[d] *= alpha;
      // The weights of the tile (attention::softmax_weight, vectorized): exp(score - max), 0 if masked.
      float tile_sum = 0.f;
#pragma omp simd reduction(+ : tile_sum)
      for (int i = 0; i < te; ++i) {
        const float e = exp_nonpositive(scores[i] - s.max);
        weights[i] = scores[i] == neg_inf() ? 0.f : e;
        tile_sum += weights[i];
      }
      s.sum += tile_sum;
      for (int i = 0; i < te; ++i) {
        const float w = weights[i];
        if (w == 0.f) continue;
        const T* vrow = V + (t0 + i) * hd;
#pragma omp simd
        for (int d = 0; d < hd; ++d) acc[d] += w * to_float(vrow[d]);
      }
      softmax[2 * (j * H + h)] = s.max;
      softmax[2 * (j * H + h) + 1] = s.sum;
    }
  }
  for (int r = 0; r < rows; ++r) {
    const int j = r / group, h = g * group + r % group;
    const Softmax s{softmax[2 * (j * H + h)], softmax[2 * (j * H + h) + 1]};
    const float inv = softmax_finish(s);
    float* acc = base + ws.att + (static_cast<int64_t>(j) * H + h) * hd;
    for (int d = 0; d < hd; ++d) acc[d] = R::round(acc[d] * inv);
  }
}

template <typename T>
void sample(const Params& p, int64_t b) {
  using R = HostRound<T>;
  const Workspace ws = workspace_layout(p);
  float* base = p.workspace + b * p.workspace_per_sample;
  const int n = p.n, D = p.hidden, H = p.heads, Hkv = p.kv_heads, hd = p.head_dim, I = p.intermediate;
  const int qw = H * hd, kvw = Hkv * hd;
  float* x = base + ws.x;
  float* xn = base + ws.xn;

  // Inputs, key mask of the new slots, RoPE tables, first visible slot.
  const T* xin = static_cast<const T*>(p.x) + b * n * D;
  for (int64_t e = 0; e < static_cast<int64_t>(n) * D; ++e) x[e] = to_float(xin[e]);
  uint8_t* mask = p.key_mask + b * p.capacity;
  for (int j = 0; j < n; ++j) mask[p.cache_len + j] = p.visible[b * n + j] ? 1 : 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < hd; ++i)
      rope_cos_sin<R>(p.positions[b * n + j], p.inv_freq, hd, i, base + ws.cos + j * hd + i,
                      base + ws.sin + j * hd + i);
  const int64_t end = p.cache_len + n;
  int64_t first_visible = end;
  for (int64_t t = 0; t < end; ++t)
    if (mask[t]) {
      first_visible = t;
      break;
    }

  for (int l = 0; l < p.layers; ++l) {
    const Layer& L = p.layer[l];
    rmsnorm_rows(x, static_cast<const T*>(L.input_norm), n, D, p.eps, xn);
    float* q = base + ws.q;
    float* kn = base + ws.kn;
    float* vn = base + ws.vn;
    matvec(static_cast<const T*>(L.q), qw, D, xn, D, n, [&](int j, int o, float a) { q[j * qw + o] = R::round(a); });
    matvec(static_cast<const T*>(L.k), kvw, D, xn, D, n, [&](int j, int o, float a) { kn[j * kvw + o] = R::round(a); });
    matvec(static_cast<const T*>(L.v), kvw, D, xn, D, n, [&](int j, int o, float a) { vn[j * kvw + o] = R::round(a); });
    // RoPE; the new keys and values go to the cache.
    for (int j = 0; j < n; ++j) {
      const float* c = base + ws.cos + j * hd;
      const float* s = base + ws.sin + j * hd;
      for (int h = 0; h < H; ++h) {
        const float* src = q + j * qw + h * hd;
        float* dst = base + ws.qr + j * qw + h * hd;
        for (int i = 0; i < hd; ++i) dst[i] = rope_element<R>(src, hd, i, c[i], s[i]);
      }
      for (int g = 0; g < Hkv; ++g) {
        const int64_t at = cache_offset(l, b, g, p.cache_len + j, p.batch, Hkv, p.capacity, hd);
        T* kc = static_cast<T*>(p.cache_k) + at;
        T* vc = static_cast<T*>(p.cache_v) + at;
        const float* ks = kn + j * kvw + g * hd;
        const float* vs = vn + j * kvw + g * hd;
        for (int i = 0; i < hd; ++i) {
          kc[i] = from_float<T>(rope_element<R>(ks, hd, i, c[i], s[i]));
          vc[i] = from_float<T>(vs[i]);
        }
      }
    }
    for (int g = 0; g < Hkv; ++g) attention_group<T>(p, ws, base, b, l, g, first_visible);
    const float* att = base + ws.att;
    matvec(static_cast<const T*>(L.o), D, qw, att, qw, n,
           [&](int j, int o, float a) { x[j * D + o] = residual<R>(x[j * D + o], a); });
    rmsnorm_rows(x, static_cast<const T*>(L.post_norm), n, D, p.eps, xn);
    float* gate = base + ws.gate;
    float* up = base + ws.up;
    matvec(static_cast<const T*>(L.gate), I, D, xn, D, n, [&](int j, int o, float a) { gate[j * I + o] = R::round(a); });
    matvec(static_cast<const T*>(L.up), I, D, xn, D, n, [&](int j, int o, float a) { up[j * I + o] = R::round(a); });
    for (int64_t e = 0; e < static_cast<int64_t>(n) * I; ++e) gate[e] = silu_gate<R>(gate[e], up[e]);
    matvec(static_cast<const T*>(L.down), D, I, gate, I, n,
           [&](int j, int o, float a) { x[j * D + o] = residual<R>(x[j * D + o], a); });
  }

  // Heads of the last token.
  const float* last = x + static_cast<int64_t>(n - 1) * D;
  rmsnorm_rows(last, static_cast<const T*>(p.final_norm), 1, D, p.eps, xn);
  float* logits = p.logits + b * static_cast<int64_t>(p.k) * p.vocab;
  matvec(static_cast<const T*>(p.lm_head), p.k * p.vocab, D, xn, D, 1,
         [&](int, int o, float a) { logits[o] = R::round(a); });
  float* loss = p.loss_pred + b * p.k;
  matvec(static_cast<const T*>(p.loss_head), p.k, D, xn, D, 1, [&](int, int o, float a) { loss[o] = R::round(a); });
}

AUTOGAZE_CLONES void samples_f32(const Params& p, int64_t begin, int64_t end) {
  for (int64_t b = begin; b < end; ++b) sample<float>(p, b);
}

}  // namespace

void decode_cpu(const Params& p, int64_t begin, int64_t end) {
  switch (p.dtype) {
    case DType::kFloat32: return samples_f32(p, begin, end);
    case DType::kBFloat16:
      for (int64_t b = begin; b < end; ++b) sample<BFloat16>(p, b);
      return;
    case DType::kFloat16:
      for (int64_t b = begin; b < end; ++b) sample<Float16>(p, b);
      return;
  }
}

}  // namespace autogaze::decode

// CPU driver of decode_step. A sample runs as serial parts (inputs, RMSNorms) and parallel phases
// per layer (q/k/v rows, kv heads, o rows, gate/up rows, down rows; then the head rows) that go
// through a ParallelFor: the bindings give one over threads when there are fewer samples than
// threads, otherwise samples are spread over threads and the phases run serially. Matvecs read
// each weight row once for all n tokens (4 tokens per pass). Float32 attention with head_dim 16 or
// 32 (attention_group_fast) puts up to 16 query rows of a kv head in the lanes of a vector: each
// key is scored against all of them at once, the streaming softmax of attention_rules.h runs per
// lane, and value accumulators stay in registers over a 64-key tile; other cases use
// attention_group (keys of a tile transposed to float32). The hot float32 phases are compiled for
// AVX-512 / AVX2 / baseline and picked at load time (GCC target_clones).

#include <algorithm>
#include <functional>
#include <type_traits>
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

// Runs body(begin, end) over parts of [0, count) (possibly in parallel), returns when all are done.
using ParallelFor = std::function<void(int64_t count, const std::function<void(int64_t, int64_t)>& body)>;
void decode_cpu_sample(const Params& p, int64_t b, const ParallelFor& par);

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


// Fast attention of one kv head (float32, head_dim = 16 * NV): the queries of the group sit in
// the 16 lanes of a vector (chunks of 16 rows), each key row is scored against all of them at once
// (keys read once), the per-lane streaming softmax runs on whole vectors, and the value
// accumulators of the rows stay in registers over a tile.
typedef float V16 __attribute__((vector_size(64)));

template <int NV>
void attention_group_fast(const Params& p, const Workspace& ws, float* base, int64_t b, int layer, int g,
                          int64_t first_visible) {
  constexpr int hd = 16 * NV;
  constexpr int RV = NV == 1 ? 16 : 10;  // rows per value pass (register accumulators)
  const int H = p.heads, group = p.heads / p.kv_heads, n = p.n;
  const int64_t end = p.cache_len + n;
  const float scale = 1.f / sqrtf(static_cast<float>(hd));
  const int64_t base_kv = cache_offset(layer, b, g, 0, p.batch, p.kv_heads, p.capacity, hd);
  const float* K = static_cast<const float*>(p.cache_k) + base_kv;
  const float* Vc = static_cast<const float*>(p.cache_v) + base_kv;
  const uint8_t* mask = p.key_mask + b * p.capacity;
  const int rows = n * group;
  alignas(64) V16 qT[hd];
  alignas(64) V16 S[kTile];
  alignas(64) float W[kTile][16];
  alignas(64) V16 acc[16][NV];
  alignas(64) int64_t slot[16];
  for (int c0 = 0; c0 < rows; c0 += 16) {
    const int rc = std::min(16, rows - c0);
    float smax[16], ssum[16];
    for (int l = 0; l < 16; ++l) {
      const int r = c0 + (l < rc ? l : 0);
      const int j = r / group, h = g * group + r % group;
      const float* q = base + ws.qr + (static_cast<int64_t>(j) * H + h) * hd;
      for (int d = 0; d < hd; ++d) qT[d][l] = l < rc ? q[d] * scale : 0.f;
      slot[l] = l < rc ? p.cache_len + j : -1;
      smax[l] = neg_inf();
      ssum[l] = 0.f;
      for (int v = 0; v < NV; ++v) acc[l][v] = V16{} ;
    }
    int64_t max_slot = 0, min_slot = end;
    for (int l = 0; l < rc; ++l) {
      max_slot = std::max(max_slot, slot[l]);
      min_slot = std::min(min_slot, slot[l]);
    }
    for (int64_t t0 = 0; t0 <= max_slot; t0 += kTile) {
      const int te = static_cast<int>(std::min<int64_t>(kTile, max_slot + 1 - t0));
      const float* Kt = K + t0 * hd;
      int i = 0;
      for (; i + 4 <= te; i += 4) {
        V16 s0 = V16{}, s1 = V16{}, s2 = V16{}, s3 = V16{};
#pragma GCC unroll 32
        for (int d = 0; d < hd; ++d) {
          s0 += qT[d] * Kt[(i + 0) * hd + d];
          s1 += qT[d] * Kt[(i + 1) * hd + d];
          s2 += qT[d] * Kt[(i + 2) * hd + d];
          s3 += qT[d] * Kt[(i + 3) * hd + d];
        }
        S[i] = s0; S[i + 1] = s1; S[i + 2] = s2; S[i + 3] = s3;
      }
      for (; i < te; ++i) {
        V16 s0 = V16{};
        for (int d = 0; d < hd; ++d) s0 += qT[d] * Kt[i * hd + d];
        S[i] = s0;
      }
      const V16 ninf = V16{} + neg_inf();
      if (t0 + te - 1 < min_slot && first_visible <= min_slot) {
        // Every key of the tile is before every query: visibility is the key's mask only.
        for (int i2 = 0; i2 < te; ++i2)
          if (!mask[t0 + i2]) S[i2] = ninf;
      } else {
        for (int i2 = 0; i2 < te; ++i2)
          for (int l = 0; l < 16; ++l)
            if (l >= rc || !key_allowed(t0 + i2, slot[l], mask[t0 + i2], first_visible)) S[i2][l] = neg_inf();
      }
      V16 tmax = ninf;
      for (int i2 = 0; i2 < te; ++i2) tmax = tmax > S[i2] ? tmax : S[i2];
      alignas(64) float alpha[16], m[16];
      bool any = false;
      for (int l = 0; l < 16; ++l) {
        if (tmax[l] == neg_inf()) {
          alpha[l] = 1.f;
          m[l] = 0.f;
          continue;
        }
        any = true;
        Softmax s{smax[l], ssum[l]};
        alpha[l] = softmax_rescale(s, tmax[l]);
        smax[l] = s.max;
        ssum[l] = s.sum;
        m[l] = s.max;
      }
      if (!any) continue;
      alignas(64) float tsum[16] = {};
      for (int i2 = 0; i2 < te; ++i2) {
#pragma omp simd
        for (int l = 0; l < 16; ++l) {
          const float sc = S[i2][l];
          const float e = exp_nonpositive(sc - m[l]);
          W[i2][l] = sc == neg_inf() ? 0.f : e;
          tsum[l] += W[i2][l];
        }
      }
      for (int l = 0; l < 16; ++l) ssum[l] += tsum[l];
      const float* Vt = Vc + t0 * hd;
      for (int r0 = 0; r0 < rc; r0 += RV) {
        V16 a[RV][NV];
#pragma GCC unroll 16
        for (int r = 0; r < RV; ++r)
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) a[r][v] = acc[r0 + r < 16 ? r0 + r : 0][v] * alpha[r0 + r < 16 ? r0 + r : 0];
        for (int i2 = 0; i2 < te; ++i2) {
          V16 vv[NV];
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) std::memcpy(&vv[v], Vt + i2 * hd + 16 * v, 64);
#pragma GCC unroll 16
          for (int r = 0; r < RV; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) a[r][v] += W[i2][(r0 + r) & 15] * vv[v];
        }
#pragma GCC unroll 16
        for (int r = 0; r < RV; ++r)
          if (r0 + r < 16)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[r0 + r][v] = a[r][v];
      }
    }
    for (int l = 0; l < rc; ++l) {
      const int r = c0 + l;
      const int j = r / group, h = g * group + r % group;
      const float inv = softmax_finish(Softmax{smax[l], ssum[l]});
      float* out = base + ws.att + (static_cast<int64_t>(j) * H + h) * hd;
      for (int d = 0; d < hd; ++d) out[d] = acc[l][d / 16][d % 16] * inv;
    }
  }
}

enum Phase { kQkv, kAttention, kO, kMlpIn, kDown, kLm };

// One parallel phase of layer `l` of sample b over the work items [begin, end).
template <typename T>
void phase(const Params& p, int64_t b, int l, int which, int64_t begin, int64_t end, int64_t first_visible) {
  using R = HostRound<T>;
  const Workspace ws = workspace_layout(p);
  float* base = p.workspace + b * p.workspace_per_sample;
  const int n = p.n, D = p.hidden, H = p.heads, Hkv = p.kv_heads, hd = p.head_dim, I = p.intermediate;
  const int qw = H * hd, kvw = Hkv * hd;
  const int group = H / Hkv;
  float* x = base + ws.x;
  float* xn = base + ws.xn;
  const int r0 = static_cast<int>(begin), r1 = static_cast<int>(end);
  if (which == kLm) {
    float* logits = p.logits + b * static_cast<int64_t>(p.k) * p.vocab;
    const int lm_rows = p.k * p.vocab;
    const int a0 = std::min(r0, lm_rows), a1 = std::min(r1, lm_rows);
    if (a1 > a0)
      matvec(static_cast<const T*>(p.lm_head) + static_cast<int64_t>(a0) * D, a1 - a0, D, xn, D, 1,
             [&](int, int o, float a) { logits[a0 + o] = R::round(a); });
    const int b0 = std::max(r0, lm_rows) - lm_rows, b1 = std::max(r1, lm_rows) - lm_rows;
    float* loss = p.loss_pred + b * p.k;
    if (b1 > b0)
      matvec(static_cast<const T*>(p.loss_head) + static_cast<int64_t>(b0) * D, b1 - b0, D, xn, D, 1,
             [&](int, int o, float a) { loss[b0 + o] = R::round(a); });
    return;
  }
  const Layer& L = p.layer[l];
  float* q = base + ws.q;
  float* kn = base + ws.kn;
  float* vn = base + ws.vn;
  switch (which) {
    case kQkv: {
      // rows [0, qw) of q, [qw, qw + kvw) of k, then v.
      auto part = [&](const T* Wm, int off, int count, float* dst, int width) {
        const int s = std::max(r0, off), e = std::min(r1, off + count);
        if (e <= s) return;
        matvec(Wm + static_cast<int64_t>(s - off) * D, e - s, D, xn, D, n,
               [&](int j, int o, float a) { dst[j * width + (s - off) + o] = R::round(a); });
      };
      part(static_cast<const T*>(L.q), 0, qw, q, qw);
      part(static_cast<const T*>(L.k), qw, kvw, kn, kvw);
      part(static_cast<const T*>(L.v), qw + kvw, kvw, vn, kvw);
      return;
    }
    case kAttention:
      for (int g = r0; g < r1; ++g) {
        // RoPE of the group's queries and of the new keys; the new keys and values go to the cache.
        for (int j = 0; j < n; ++j) {
          const float* c = base + ws.cos + j * hd;
          const float* s = base + ws.sin + j * hd;
          for (int h = g * group; h < (g + 1) * group; ++h) {
            const float* src = q + j * qw + h * hd;
            float* dst = base + ws.qr + j * qw + h * hd;
            for (int i = 0; i < hd; ++i) dst[i] = rope_element<R>(src, hd, i, c[i], s[i]);
          }
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
        if constexpr (std::is_same_v<T, float>) {
          if (hd == 32) {
            attention_group_fast<2>(p, ws, base, b, l, g, first_visible);
            continue;
          }
          if (hd == 16) {
            attention_group_fast<1>(p, ws, base, b, l, g, first_visible);
            continue;
          }
        }
        attention_group<T>(p, ws, base, b, l, g, first_visible);
      }
      return;
    case kO: {
      const float* att = base + ws.att;
      matvec(static_cast<const T*>(L.o) + static_cast<int64_t>(r0) * qw, r1 - r0, qw, att, qw, n,
             [&](int j, int o, float a) { x[j * D + r0 + o] = residual<R>(x[j * D + r0 + o], a); });
      return;
    }
    case kMlpIn: {
      float* gate = base + ws.gate;
      float* up = base + ws.up;
      matvec(static_cast<const T*>(L.gate) + static_cast<int64_t>(r0) * D, r1 - r0, D, xn, D, n,
             [&](int j, int o, float a) { gate[j * I + r0 + o] = R::round(a); });
      matvec(static_cast<const T*>(L.up) + static_cast<int64_t>(r0) * D, r1 - r0, D, xn, D, n,
             [&](int j, int o, float a) { up[j * I + r0 + o] = R::round(a); });
      for (int j = 0; j < n; ++j)
        for (int o = r0; o < r1; ++o) gate[j * I + o] = silu_gate<R>(gate[j * I + o], up[j * I + o]);
      return;
    }
    case kDown: {
      const float* gate = base + ws.gate;
      matvec(static_cast<const T*>(L.down) + static_cast<int64_t>(r0) * I, r1 - r0, I, gate, I, n,
             [&](int j, int o, float a) { x[j * D + r0 + o] = residual<R>(x[j * D + r0 + o], a); });
      return;
    }
  }
}

AUTOGAZE_CLONES void phase_f32(const Params& p, int64_t b, int l, int which, int64_t begin, int64_t end,
                               int64_t first_visible) {
  phase<float>(p, b, l, which, begin, end, first_visible);
}

void run_phase(const Params& p, int64_t b, int l, int which, int64_t begin, int64_t end, int64_t first_visible) {
  switch (p.dtype) {
    case DType::kFloat32: return phase_f32(p, b, l, which, begin, end, first_visible);
    case DType::kBFloat16: return phase<BFloat16>(p, b, l, which, begin, end, first_visible);
    case DType::kFloat16: return phase<Float16>(p, b, l, which, begin, end, first_visible);
  }
}

// The serial parts of a sample (inputs, norms); the phases go through `par`.
template <typename T>
void sample(const Params& p, int64_t b, const ParallelFor& par) {
  using R = HostRound<T>;
  const Workspace ws = workspace_layout(p);
  float* base = p.workspace + b * p.workspace_per_sample;
  const int n = p.n, D = p.hidden, H = p.heads, Hkv = p.kv_heads, hd = p.head_dim, I = p.intermediate;
  const int qw = H * hd, kvw = Hkv * hd;
  float* x = base + ws.x;
  float* xn = base + ws.xn;

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
  auto run = [&](int l, int which, int64_t count) {
    par(count, [&](int64_t s, int64_t e) { run_phase(p, b, l, which, s, e, first_visible); });
  };
  for (int l = 0; l < p.layers; ++l) {
    const Layer& L = p.layer[l];
    rmsnorm_rows(x, static_cast<const T*>(L.input_norm), n, D, p.eps, xn);
    run(l, kQkv, qw + 2 * kvw);
    run(l, kAttention, Hkv);
    run(l, kO, D);
    rmsnorm_rows(x, static_cast<const T*>(L.post_norm), n, D, p.eps, xn);
    run(l, kMlpIn, I);
    run(l, kDown, D);
  }
  const float* last = x + static_cast<int64_t>(n - 1) * D;
  rmsnorm_rows(last, static_cast<const T*>(p.final_norm), 1, D, p.eps, xn);
  run(0, kLm, static_cast<int64_t>(p.k) * p.vocab + p.k);
}

void sample_any(const Params& p, int64_t b, const ParallelFor& par) {
  switch (p.dtype) {
    case DType::kFloat32: return sample<float>(p, b, par);
    case DType::kBFloat16: return sample<BFloat16>(p, b, par);
    case DType::kFloat16: return sample<Float16>(p, b, par);
  }
}

}  // namespace

void decode_cpu(const Params& p, int64_t begin, int64_t end) {
  const ParallelFor serial = [](int64_t count, const std::function<void(int64_t, int64_t)>& body) { body(0, count); };
  for (int64_t b = begin; b < end; ++b) sample_any(p, b, serial);
}

void decode_cpu_sample(const Params& p, int64_t b, const ParallelFor& par) { sample_any(p, b, par); }

}  // namespace autogaze::decode

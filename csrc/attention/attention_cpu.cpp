// CPU driver of varlen attention: one (query, head) row at a time, keys streamed in the aligned
// tiles of attention_rules.h with the online softmax; q, k, v converted to float32 as read.

#include <vector>

#include "attention/attention.h"
#include "attention/attention_rules.h"
#include "common/float_convert.h"

namespace autogaze::attention {
namespace {

template <typename T>
void rows(const Params& p, int64_t begin, int64_t end) {
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* out = static_cast<T*>(p.out);
  const int D = p.head_dim;
  const int group = p.heads / p.kv_heads;
  const int64_t kv_row = static_cast<int64_t>(p.kv_heads) * D;  // elements per token of k / v
  std::vector<float> qf(D), acc(D), score(kKeyTile);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t i = row / p.heads;
    const int h = static_cast<int>(row % p.heads);
    const int64_t kv_offset = static_cast<int64_t>(h / group) * D;
    const T* qrow = q + row * D;
    for (int d = 0; d < D; ++d) qf[d] = to_float(qrow[d]);
    for (int d = 0; d < D; ++d) acc[d] = 0.f;
    const int64_t lo = p.key_lo[i], hi = p.key_hi[i];
    Softmax s = softmax_start();
    for (int64_t t0 = first_tile(lo); t0 < hi; t0 += kKeyTile) {
      const int jb = tile_begin(t0, lo), je = tile_end(t0, hi);
      float tile_max = neg_inf();
      for (int j = jb; j < je; ++j) {
        const T* krow = k + (t0 + j) * kv_row + kv_offset;
        float dot = 0.f;
        for (int d = 0; d < D; ++d) dot += qf[d] * to_float(krow[d]);
        score[j] = dot * p.scale;
        tile_max = fmaxf(tile_max, score[j]);
      }
      const float alpha = softmax_rescale(s, tile_max);
      for (int d = 0; d < D; ++d) acc[d] *= alpha;
      for (int j = jb; j < je; ++j) {
        const float w = softmax_weight(s, score[j]);
        const T* vrow = v + (t0 + j) * kv_row + kv_offset;
        for (int d = 0; d < D; ++d) acc[d] += w * to_float(vrow[d]);
      }
    }
    const float inv = softmax_finish(s);
    T* orow = out + row * D;
    for (int d = 0; d < D; ++d) orow[d] = from_float<T>(acc[d] * inv);
  }
}

}  // namespace

void attention_cpu(const Params& p, int64_t begin, int64_t end) {
  switch (p.dtype) {
    case DType::kFloat32: return rows<float>(p, begin, end);
    case DType::kBFloat16: return rows<BFloat16>(p, begin, end);
    case DType::kFloat16: return rows<Float16>(p, begin, end);
  }
}

}  // namespace autogaze::attention

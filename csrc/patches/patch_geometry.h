#pragma once
// Where a patch's values come from, shared by the CPU and CUDA kernels: output row -> (frame, id),
// id -> (scale, cell), output pixel -> 4 bicubic source taps per axis, and the 4x4 weighted sum.
// The arithmetic follows torch's CPU upsample_bicubic2d in float32 (A = -0.75, align_corners=False).

#include <cmath>
#include <cstdint>

#include "common/host_device.h"
#include "patches/patches.h"

namespace autogaze::patches {

// The 4 source pixels of one output index along one axis, as offsets (index * stride, in
// elements), and their weights.
struct Taps {
  int64_t offset[4];
  float weight[4];
};

AUTOGAZE_HOST_DEVICE inline int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

AUTOGAZE_HOST_DEVICE inline float cubic_near(float x, float a) {  // |x| <= 1
  return ((a + 2.f) * x - (a + 3.f)) * x * x + 1.f;
}

AUTOGAZE_HOST_DEVICE inline float cubic_far(float x, float a) {  // 1 < |x| < 2
  return ((a * x - 5.f * a) * x + 8.f * a) * x - 4.f * a;
}

// Taps of output index `i` along an axis of `in_size` source pixels `stride` elements apart;
// scale = in_size / out_size computed in float, as torch does.
AUTOGAZE_HOST_DEVICE inline Taps bicubic_taps(int i, int in_size, float scale, int64_t stride) {
  constexpr float a = -0.75f;
  // Fused multiply-add as in torch's compiled kernels (AVX2/AVX512 CPU builds and CUDA contract
  // this expression); the rounding of the source coordinate decides the weights at large sizes.
  const float source = fmaf(scale, static_cast<float>(i) + 0.5f, -0.5f);  // not clamped (cubic)
  const int floor_source = static_cast<int>(floorf(source));
  const int base = floor_source < in_size - 1 ? floor_source : in_size - 1;
  const float t = fminf(fmaxf(source - static_cast<float>(base), 0.f), 1.f);
  const float u = 1.f - t;  // rounded on its own, as torch does, before u + 1
  Taps taps;
  taps.weight[0] = cubic_far(t + 1.f, a);
  taps.weight[1] = cubic_near(t, a);
  taps.weight[2] = cubic_near(u, a);
  taps.weight[3] = cubic_far(u + 1.f, a);
  for (int k = 0; k < 4; ++k) taps.offset[k] = clamp(base - 1 + k, 0, in_size - 1) * stride;
  return taps;
}

// Sum over the 4x4 taps in torch's order: each source row along x, then the rows along y.
// `load(offset)` returns the source value at `offset` (elements) from the channel plane as float.
template <typename Load>
AUTOGAZE_HOST_DEVICE inline float bicubic_sample(const Taps& ty, const Taps& tx, const Load& load) {
  float sum = 0.f;
  for (int a = 0; a < 4; ++a) {
    float line = 0.f;
    for (int b = 0; b < 4; ++b) line += load(ty.offset[a] + tx.offset[b]) * tx.weight[b];
    sum += line * ty.weight[a];
  }
  return sum;
}

// A p x p cell of one scale: its side and its top-left pixel in the resized frame.
struct Cell {
  int side;
  int y0, x0;
};

// Requires 0 <= id < scale_begin[num_scales].
AUTOGAZE_HOST_DEVICE inline Cell locate_cell(const Params& p, int64_t id) {
  int k = 0;
  while (id >= p.scale_begin[k + 1]) ++k;
  const int side = p.scales[k];
  const int grid = side / p.patch_size;
  const int local = static_cast<int>(id - p.scale_begin[k]);
  return {side, (local / grid) * p.patch_size, (local % grid) * p.patch_size};
}

struct RowSource {
  int64_t frame;
  int64_t id;
};

// Which frame and id output row `row` holds (see Params). With ids, the frame is the last f with
// frame_offsets[f] <= row (empty frames are skipped), clamped to a valid frame whatever the offsets.
AUTOGAZE_HOST_DEVICE inline RowSource locate_row(const Params& p, int64_t row) {
  if (p.ids == nullptr) {
    const int64_t n = p.scale_begin[p.num_scales];
    return {row / n, row % n};
  }
  int64_t lo = 0, hi = p.frames;  // invariant: answer in [lo, hi)
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (p.frame_offsets[mid] <= row) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return {lo, p.ids[row]};
}

AUTOGAZE_HOST_DEVICE inline int64_t frame_offset(const Params& p, int64_t frame) {
  return (frame / p.time) * p.stride_b + (frame % p.time) * p.stride_t;
}

}  // namespace autogaze::patches

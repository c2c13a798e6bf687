#pragma once
// The per-element math of varlen attention, shared by the CPU driver and the CUDA kernel so both
// run the same arithmetic: keys are streamed in tiles of kKeyTile aligned to multiples of
// kKeyTile in the packed sequence; for each tile the running max is raised once to the tile's
// largest score (rescaling the running sum and accumulator), then each visible key adds
// exp(score - max) to the sum and exp(score - max) * v to the accumulator (float32 throughout).

#include <math.h>

#include <cstdint>

#include "common/host_device.h"

namespace autogaze::attention {

constexpr int kKeyTile = 64;    // keys per tile (CPU and CUDA)
constexpr int kQueryTile = 64;  // queries per CUDA block

AUTOGAZE_HOST_DEVICE inline float neg_inf() { return -__builtin_huge_valf(); }

// A query's visible range is valid when 0 <= lo < hi <= length (at least one key).
AUTOGAZE_HOST_DEVICE inline bool valid_range(int64_t lo, int64_t hi, int64_t length) {
  return 0 <= lo && lo < hi && hi <= length;
}

// The first key tile touching [lo, hi): tiles start at multiples of kKeyTile.
AUTOGAZE_HOST_DEVICE inline int64_t first_tile(int64_t lo) { return lo / kKeyTile * kKeyTile; }

// The visible part [begin, end) of the tile starting at tile_start, relative to tile_start
// (begin >= end: nothing visible).
AUTOGAZE_HOST_DEVICE inline int tile_begin(int64_t tile_start, int64_t lo) {
  return static_cast<int>((lo > tile_start ? lo : tile_start) - tile_start);
}
AUTOGAZE_HOST_DEVICE inline int tile_end(int64_t tile_start, int64_t hi) {
  const int64_t end = tile_start + kKeyTile;
  return static_cast<int>((hi < end ? hi : end) - tile_start);
}

// Streaming (online) softmax state of one (query, head).
struct Softmax {
  float max;  // largest score seen (-inf before the first tile)
  float sum;  // sum of exp(score - max)
};

AUTOGAZE_HOST_DEVICE inline Softmax softmax_start() { return {neg_inf(), 0.f}; }

// A new tile whose largest visible score is tile_max: raises the running max, rescales the
// running sum, and returns the factor the accumulator must be multiplied by.
AUTOGAZE_HOST_DEVICE inline float softmax_rescale(Softmax& s, float tile_max) {
  const float m = fmaxf(s.max, tile_max);
  const float alpha = s.max == neg_inf() ? 0.f : expf(s.max - m);
  s.max = m;
  s.sum *= alpha;
  return alpha;
}

// The weight of one visible key of the current tile (added to the running sum); the
// accumulator adds weight * v.
AUTOGAZE_HOST_DEVICE inline float softmax_weight(Softmax& s, float score) {
  const float p = expf(score - s.max);
  s.sum += p;
  return p;
}

// The factor the accumulator is multiplied by at the end (0 if no key was seen).
AUTOGAZE_HOST_DEVICE inline float softmax_finish(const Softmax& s) { return s.sum > 0.f ? 1.f / s.sum : 0.f; }

}  // namespace autogaze::attention

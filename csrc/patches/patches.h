#pragma once
// Multi-scale patch extraction: params and launch declarations (no torch, no CUDA headers).
//
// Every scale s resizes a frame (C, H, W) to (C, s, s) with torch's bicubic
// (F.interpolate(mode="bicubic", align_corners=False, antialias=False)) and cuts it into (s/p)^2
// non-overlapping p x p cells, row-major. Frame-local ids number the cells of all scales in the
// given order: ids [scale_begin[k], scale_begin[k+1]) are the cells of scale k, N = scale_begin[K].
// One output row is one patch, channel-major: value (c, ky, kx) at column c*p*p + ky*p + kx.

#include <cstdint>

#include "common/dtype.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace autogaze::patches {

inline constexpr int kMaxScales = 16;

struct Params {
  const void* video;  // (B, T, C, H, W) of `dtype`, strides below (in elements)
  void* out;          // (rows, C*p*p) contiguous, of `dtype`
  // Which patch each output row holds:
  //   ids == nullptr: row r is id r % N of frame r / N (every patch of every frame, rows = B*T*N);
  //   otherwise row r is id ids[r] of the frame f with frame_offsets[f] <= r < frame_offsets[f+1],
  //   frame f = b*T + t, frame_offsets of length B*T + 1.
  const int64_t* ids;
  const int64_t* frame_offsets;
  int64_t rows;
  DType dtype;

  int64_t frames, time;  // B*T and T
  int64_t channels, height, width;
  int64_t stride_b, stride_t, stride_c, stride_h, stride_w;

  int patch_size;
  int num_scales;
  int scales[kMaxScales];           // output side of each scale
  int scale_begin[kMaxScales + 1];  // first id of each scale; scale_begin[num_scales] = N
};

// Computes output rows [row_begin, row_end); callers split rows across threads.
void patches_cpu(const Params& params, int64_t row_begin, int64_t row_end);

// Enqueues all rows on `stream`; the caller checks the launch (cudaGetLastError). With ids, an id
// outside [0, N) traps on the device.
void patches_cuda(const Params& params, CUstream_st* stream);

}  // namespace autogaze::patches

// CUDA kernel for multiscale_patches / gather_patches. One block per output row (grid-stride over
// rows); its threads walk the row's C*p*p values, so stores are coalesced and neighbouring threads
// read neighbouring source pixels. Accumulation is float32 for every storage type.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "common/cuda_convert.cuh"

#include "patches/patch_geometry.h"
#include "patches/patches.h"

namespace autogaze::patches {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

template <typename T>
__global__ void __launch_bounds__(kThreads) patches_kernel(const Params p) {
  const T* video = static_cast<const T*>(p.video);
  T* out = static_cast<T*>(p.out);
  const int size = p.patch_size;
  const int plane_size = size * size;
  const int row_size = static_cast<int>(p.channels) * plane_size;
  const int64_t num_ids = p.scale_begin[p.num_scales];

  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const RowSource source = locate_row(p, row);
    if (source.id < 0 || source.id >= num_ids) {
      if (threadIdx.x == 0)
        printf("autogaze_ext gather_patches: ids[%lld] = %lld is out of range [0, %lld)\n",
               static_cast<long long>(row), static_cast<long long>(source.id),
               static_cast<long long>(num_ids));
      __trap();
    }
    const Cell cell = locate_cell(p, source.id);
    const T* frame = video + frame_offset(p, source.frame);
    T* dst = out + row * row_size;
    const bool copy = cell.side == p.height && cell.side == p.width;  // unresized scale
    const float scale_y = static_cast<float>(p.height) / static_cast<float>(cell.side);
    const float scale_x = static_cast<float>(p.width) / static_cast<float>(cell.side);

    for (int e = threadIdx.x; e < row_size; e += blockDim.x) {
      const int c = e / plane_size;
      const int ky = (e - c * plane_size) / size;
      const int kx = e - c * plane_size - ky * size;
      const T* plane = frame + c * p.stride_c;
      if (copy) {
        dst[e] = plane[(cell.y0 + ky) * p.stride_h + (cell.x0 + kx) * p.stride_w];
        continue;
      }
      const Taps ty = bicubic_taps(cell.y0 + ky, static_cast<int>(p.height), scale_y, p.stride_h);
      const Taps tx = bicubic_taps(cell.x0 + kx, static_cast<int>(p.width), scale_x, p.stride_w);
      const auto load = [plane](int64_t offset) { return to_float(plane[offset]); };
      dst[e] = from_float<T>(bicubic_sample(ty, tx, load));
    }
  }
}

template <typename T>
void launch(const Params& p, cudaStream_t stream) {
  const int64_t blocks = p.rows < kMaxBlocks ? p.rows : kMaxBlocks;
  patches_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
}

}  // namespace

void patches_cuda(const Params& params, CUstream_st* stream) {
  if (params.rows == 0) return;
  switch (params.dtype) {
    case DType::kFloat32: return launch<float>(params, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(params, stream);
    case DType::kFloat16: return launch<__half>(params, stream);
  }
}

}  // namespace autogaze::patches

// CPU kernel for multiscale_patches / gather_patches: each row computed directly from its source taps.

#include "common/float_convert.h"
#include "patches/patch_geometry.h"
#include "patches/patches.h"

namespace autogaze::patches {
namespace {

constexpr int kColumnTile = 16;  // column taps computed once per patch, kept on the stack

// Writes patch `id` of one frame into `out` (C*p*p values, channel-major).
template <typename T>
void compute_patch(const Params& p, const T* frame, int64_t id, T* out) {
  const Cell cell = locate_cell(p, id);
  const int size = p.patch_size;
  const int64_t plane_size = int64_t{size} * size;

  if (cell.side == p.height && cell.side == p.width) {  // unresized scale: a plain copy
    for (int64_t c = 0; c < p.channels; ++c)
      for (int ky = 0; ky < size; ++ky) {
        const T* src = frame + c * p.stride_c + (cell.y0 + ky) * p.stride_h + cell.x0 * p.stride_w;
        T* dst = out + c * plane_size + int64_t{ky} * size;
        for (int kx = 0; kx < size; ++kx) dst[kx] = src[kx * p.stride_w];
      }
    return;
  }

  const int height = static_cast<int>(p.height), width = static_cast<int>(p.width);
  const float scale_y = static_cast<float>(height) / static_cast<float>(cell.side);
  const float scale_x = static_cast<float>(width) / static_cast<float>(cell.side);
  Taps tx[kColumnTile];
  for (int x0 = 0; x0 < size; x0 += kColumnTile) {
    const int columns = size - x0 < kColumnTile ? size - x0 : kColumnTile;
    for (int k = 0; k < columns; ++k) tx[k] = bicubic_taps(cell.x0 + x0 + k, width, scale_x, p.stride_w);
    for (int ky = 0; ky < size; ++ky) {
      const Taps ty = bicubic_taps(cell.y0 + ky, height, scale_y, p.stride_h);
      for (int64_t c = 0; c < p.channels; ++c) {
        const T* plane = frame + c * p.stride_c;
        const auto load = [plane](int64_t offset) { return to_float(plane[offset]); };
        T* dst = out + c * plane_size + int64_t{ky} * size + x0;
        for (int k = 0; k < columns; ++k) dst[k] = from_float<T>(bicubic_sample(ty, tx[k], load));
      }
    }
  }
}

template <typename T>
void compute_rows(const Params& p, int64_t row_begin, int64_t row_end) {
  const T* video = static_cast<const T*>(p.video);
  T* out = static_cast<T*>(p.out);
  const int64_t row_size = p.channels * p.patch_size * p.patch_size;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const RowSource source = locate_row(p, row);
    compute_patch(p, video + frame_offset(p, source.frame), source.id, out + row * row_size);
  }
}

}  // namespace

void patches_cpu(const Params& params, int64_t row_begin, int64_t row_end) {
  switch (params.dtype) {
    case DType::kFloat32: return compute_rows<float>(params, row_begin, row_end);
    case DType::kBFloat16: return compute_rows<BFloat16>(params, row_begin, row_end);
    case DType::kFloat16: return compute_rows<Float16>(params, row_begin, row_end);
  }
}

}  // namespace autogaze::patches

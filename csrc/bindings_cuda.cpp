// CUDA implementations of the autogaze_ext ops (compiled only with AUTOGAZE_WITH_CUDA): the checks
// and allocation of bindings.cpp, then a launch on the current stream of the input's device.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings.h"
#include "patches/patches.h"

namespace autogaze {
namespace {

void run_cuda(const PatchesCall& call, const at::Tensor& video) {
  const c10::cuda::CUDAGuard guard(video.device());
  patches::patches_cuda(call.params, c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor multiscale_patches_cuda(const at::Tensor& video, c10::IntArrayRef scales, int64_t patch_size) {
  const PatchesCall call = prepare_multiscale_patches(video, scales, patch_size);
  run_cuda(call, video);
  return call.out;
}

at::Tensor gather_patches_cuda(const at::Tensor& video, const at::Tensor& ids,
                               const at::Tensor& frame_offsets, c10::IntArrayRef scales, int64_t patch_size) {
  const PatchesCall call = prepare_gather_patches(video, ids, frame_offsets, scales, patch_size);
  run_cuda(call, video);
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) {
  m.impl("multiscale_patches", &multiscale_patches_cuda);
  m.impl("gather_patches", &gather_patches_cuda);
}

}  // namespace autogaze

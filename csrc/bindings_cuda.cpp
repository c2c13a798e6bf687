// CUDA implementations of the autogaze_ext ops (compiled only with AUTOGAZE_WITH_CUDA): the checks
// and allocation of bindings.cpp, then a launch on the current stream of the input's device.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings.h"
#include "patches/patches.h"
#include "select/select.h"

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

at::Tensor select_step_cuda(const at::Tensor& logits, const at::Tensor& loss_pred,
                            const std::optional<at::Tensor>& requirement,
                            const std::optional<at::Tensor>& uniforms, at::Tensor& used, at::Tensor& n,
                            at::Tensor& finished, at::Tensor& done, at::Tensor& tokens,
                            at::Tensor& leftover_ids, at::Tensor& leftover_len, int64_t budget, bool first,
                            bool coupled, double temperature, int64_t top_k) {
  constexpr int64_t kMaxCoupledBatch = 1024;  // select_cuda.cu: 128 threads x 8 samples
  TORCH_CHECK_VALUE(!coupled || logits.size(0) <= kMaxCoupledBatch, "select_step: the coupled mode on CUDA takes at most ",
                    kMaxCoupledBatch, " samples, got ", logits.size(0));
  const SelectCall call = prepare_select_step(logits, loss_pred, requirement, uniforms, used, n, finished,
                                              done, tokens, leftover_ids, leftover_len, budget, first,
                                              coupled, temperature, top_k);
  const c10::cuda::CUDAGuard guard(logits.device());
  select::select_cuda(call.params, c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return call.fed;
}

}  // namespace

TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) {
  m.impl("multiscale_patches", &multiscale_patches_cuda);
  m.impl("gather_patches", &gather_patches_cuda);
  m.impl("select_step", &select_step_cuda);
}

}  // namespace autogaze

// ---- varlen_attention (csrc/attention) ----------------------------------------------------------

namespace autogaze {
namespace {

at::Tensor varlen_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& key_lo, const at::Tensor& key_hi, double scale) {
  TORCH_CHECK_VALUE(q.dim() != 3 || q.size(2) <= attention::kMaxHeadDimCuda,
                    "varlen_attention: head_dim must be at most ", attention::kMaxHeadDimCuda,
                    " on CUDA, got q of shape ", q.sizes());
  TORCH_CHECK_VALUE(q.dim() != 3 || q.size(1) <= 65535, "varlen_attention: heads must be at most 65535 on CUDA, got q of shape ",
                    q.sizes());
  const AttentionCall call = prepare_varlen_attention(q, k, v, key_lo, key_hi, scale);
  const c10::cuda::CUDAGuard guard(q.device());
  attention::attention_cuda(call.params, c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) { m.impl("varlen_attention", &varlen_attention_cuda); }

}  // namespace autogaze

// ---- decode_step (csrc/decode) ------------------------------------------------------------------

namespace autogaze {
namespace {

std::tuple<at::Tensor, at::Tensor> decode_step_cuda(const at::Tensor& x, const at::Tensor& positions,
                                                    const at::Tensor& visible, at::Tensor& cache_k,
                                                    at::Tensor& cache_v, at::Tensor& key_mask, int64_t cache_len,
                                                    at::TensorList weights, const at::Tensor& inv_freq, double eps) {
  TORCH_CHECK_VALUE(inv_freq.dim() != 1 || 2 * inv_freq.size(0) <= decode::kMaxHeadDimCuda,
                    "decode_step: head_dim = 2 * len(inv_freq) must be at most ", decode::kMaxHeadDimCuda,
                    " on CUDA, got ", 2 * inv_freq.size(0));
  TORCH_CHECK_VALUE(x.dim() != 3 || x.size(0) <= 2147483647, "decode_step: at most 2^31 - 1 samples on CUDA");
  const DecodeCall call =
      prepare_decode_step(x, positions, visible, cache_k, cache_v, key_mask, cache_len, weights, inv_freq, eps);
  const c10::cuda::CUDAGuard guard(x.device());
  decode::decode_cuda(call.params, c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {call.logits, call.loss_pred};
}

}  // namespace

TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) { m.impl("decode_step", &decode_step_cuda); }

}  // namespace autogaze

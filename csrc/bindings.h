#pragma once
// Torch-facing helpers shared by bindings.cpp (schemas, CPU kernels, build_info) and
// bindings_cuda.cpp (CUDA kernels): argument checks, output allocation, kernel params.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

#include "patches/patches.h"
#include "select/select.h"

namespace autogaze {

// A checked call: the output allocated by torch, the inputs the params point into (kept alive),
// and the params for the kernel.
struct PatchesCall {
  at::Tensor out;
  at::Tensor ids, frame_offsets;
  patches::Params params;
};

// video (B, T, C, H, W) -> out (B, T, N, C*p*p).
PatchesCall prepare_multiscale_patches(const at::Tensor& video, c10::IntArrayRef scales, int64_t patch_size);

// video (B, T, C, H, W), ids (L,), frame_offsets (B*T + 1,) -> out (L, C*p*p). The values of ids
// and frame_offsets are checked only for CPU tensors (on CUDA that needs a sync; the kernel checks
// ids itself).
PatchesCall prepare_gather_patches(const at::Tensor& video, const at::Tensor& ids,
                                   const at::Tensor& frame_offsets, c10::IntArrayRef scales,
                                   int64_t patch_size);

// A checked select_step call: output, workspaces and contiguous inputs kept alive with the params.
struct SelectCall {
  at::Tensor fed, scores, picks, selected;
  at::Tensor logits, loss_pred, requirement, uniforms;
  select::Params params;
};

SelectCall prepare_select_step(const at::Tensor& logits, const at::Tensor& loss_pred,
                               const std::optional<at::Tensor>& requirement,
                               const std::optional<at::Tensor>& uniforms, const at::Tensor& used,
                               const at::Tensor& n, const at::Tensor& finished, const at::Tensor& done,
                               const at::Tensor& tokens, const at::Tensor& leftover_ids,
                               const at::Tensor& leftover_len, int64_t budget, bool first, bool coupled,
                               double temperature, int64_t top_k);

}  // namespace autogaze

// ---- varlen_attention (csrc/attention) ----------------------------------------------------------
#include "attention/attention.h"

namespace autogaze {

// A checked varlen_attention call: output, contiguous inputs kept alive with the params.
struct AttentionCall {
  at::Tensor out;
  at::Tensor q, k, v, key_lo, key_hi;
  attention::Params params;
};

// q (L, H, D), k / v (L, Hkv, D), key_lo / key_hi (L,) int64 -> out (L, H, D). The range values
// (0 <= lo < hi <= L) are checked only for CPU tensors (on CUDA that needs a sync; they are
// trusted there).
AttentionCall prepare_varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& key_lo, const at::Tensor& key_hi, double scale);

}  // namespace autogaze

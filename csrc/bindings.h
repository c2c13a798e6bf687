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

// ---- decode_step (csrc/decode) ------------------------------------------------------------------
#include <vector>

#include "decode/decode.h"

namespace autogaze {

// A checked decode_step call: outputs, workspace and contiguous inputs kept alive with the params.
struct DecodeCall {
  at::Tensor logits, loss_pred, workspace;
  at::Tensor x, positions, visible, inv_freq;
  std::vector<at::Tensor> weights;
  decode::Params params;
};

// x (B, n, D), positions (B, n) int64, visible (B, n) bool; cache_k / cache_v (layers, B, Hkv,
// capacity, hd) contiguous of x's dtype, key_mask (B, capacity) bool contiguous, written at slots
// [cache_len, cache_len + n); weights: 9 per layer then final norm, lm_head, loss head (see
// autogaze_ext.ops.decoder_weights) -> logits (B, K, V), loss_pred (B, K) float32.
DecodeCall prepare_decode_step(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& visible,
                               const at::Tensor& cache_k, const at::Tensor& cache_v, const at::Tensor& key_mask,
                               int64_t cache_len, at::TensorList weights, const at::Tensor& inv_freq, double eps);

}  // namespace autogaze

// The autogaze_ext op library: schemas, argument checks, CPU implementations, and the `_C`
// Python module's build_info(). CUDA implementations live in bindings_cuda.cpp.

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>

#include "bindings.h"
#include "patches/patches.h"
#include "select/select.h"

namespace autogaze {
namespace {

#ifdef AUTOGAZE_WITH_CUDA
constexpr bool kWithCuda = true;
#else
constexpr bool kWithCuda = false;
#endif

// "torch.float32": dtypes named as in Python.
std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

// Checks video, scales and patch_size; fills every params field but out, ids and frame_offsets.
patches::Params video_params(const char* op, const at::Tensor& video, c10::IntArrayRef scales,
                             int64_t patch_size) {
  TORCH_CHECK_VALUE(video.dim() == 5, op, ": video must be 5-D (B, T, C, H, W), got shape ", video.sizes());
  const auto type = video.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, op,
                   ": video must be float32, bfloat16 or float16, got ", dtype_name(type));
  const DType dtype = type == at::kFloat      ? DType::kFloat32
                      : type == at::kBFloat16 ? DType::kBFloat16
                                              : DType::kFloat16;
  TORCH_CHECK_VALUE(video.size(2) > 0 && video.size(3) > 0 && video.size(4) > 0, op,
                    ": video needs C, H, W > 0, got shape ", video.sizes());
  constexpr int64_t kMaxSide = 1 << 16;  // with the checks on N and C*p*p, keeps kernel indices in int
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(video.size(3) <= kMaxSide && video.size(4) <= kMaxSide, op,
                    ": video H and W must be at most ", kMaxSide, ", got shape ", video.sizes());
  TORCH_CHECK_VALUE(patch_size > 0, op, ": patch_size must be positive, got ", patch_size);
  TORCH_CHECK_VALUE(!scales.empty() && scales.size() <= patches::kMaxScales, op, ": scales must hold 1 to ",
                    patches::kMaxScales, " sizes, got ", scales);

  patches::Params p{};
  p.video = video.const_data_ptr();
  p.dtype = dtype;
  p.frames = video.size(0) * video.size(1);
  p.time = video.size(1);
  p.channels = video.size(2);
  p.height = video.size(3);
  p.width = video.size(4);
  p.stride_b = video.stride(0);
  p.stride_t = video.stride(1);
  p.stride_c = video.stride(2);
  p.stride_h = video.stride(3);
  p.stride_w = video.stride(4);
  p.patch_size = static_cast<int>(patch_size);
  p.num_scales = static_cast<int>(scales.size());
  int64_t num_ids = 0;
  p.scale_begin[0] = 0;
  for (size_t k = 0; k < scales.size(); ++k) {
    const int64_t side = scales[k];
    TORCH_CHECK_VALUE(side > 0 && side <= kMaxSide && side % patch_size == 0, op, ": scales[", k,
                      "] = ", side, " must be a positive multiple of patch_size = ", patch_size, " (at most ",
                      kMaxSide, ")");
    num_ids += (side / patch_size) * (side / patch_size);
    TORCH_CHECK_VALUE(num_ids <= kMaxInt, op, ": scales ", scales, " with patch_size = ", patch_size,
                      " give more than ", kMaxInt, " ids per frame");
    p.scales[k] = static_cast<int>(side);
    p.scale_begin[k + 1] = static_cast<int>(num_ids);
  }
  TORCH_CHECK_VALUE(p.channels * patch_size * patch_size <= kMaxInt, op,
                    ": C*p*p = ", p.channels * patch_size * patch_size, " exceeds ", kMaxInt);
  return p;
}

int64_t row_size(const patches::Params& p) { return p.channels * p.patch_size * p.patch_size; }

// ids in [0, N); frame_offsets start at 0, never decrease, end at len(ids). CPU tensors only.
void check_ids_values(const at::Tensor& ids, const at::Tensor& frame_offsets, int64_t num_ids) {
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t j = 0; j < ids.numel(); ++j)
    TORCH_CHECK_INDEX(id[j] >= 0 && id[j] < num_ids, "gather_patches: ids[", j, "] = ", id[j],
                      " is out of range [0, ", num_ids, ")");
  const int64_t* offset = frame_offsets.const_data_ptr<int64_t>();
  const int64_t frames = frame_offsets.numel() - 1;
  TORCH_CHECK_VALUE(offset[0] == 0, "gather_patches: frame_offsets[0] must be 0, got ", offset[0]);
  for (int64_t f = 0; f < frames; ++f)
    TORCH_CHECK_VALUE(offset[f] <= offset[f + 1],
                      "gather_patches: frame_offsets must be non-decreasing, got frame_offsets[", f,
                      "] = ", offset[f], " > frame_offsets[", f + 1, "] = ", offset[f + 1]);
  TORCH_CHECK_VALUE(offset[frames] == ids.numel(),
                    "gather_patches: frame_offsets[-1] must equal len(ids) = ", ids.numel(), ", got ",
                    offset[frames]);
}

void run_cpu(const patches::Params& params) {
  constexpr int64_t kValuesPerTask = 1 << 15;
  const int64_t grain = std::max<int64_t>(1, kValuesPerTask / row_size(params));
  at::parallel_for(0, params.rows, grain,
                   [&](int64_t begin, int64_t end) { patches::patches_cpu(params, begin, end); });
}

at::Tensor multiscale_patches_cpu(const at::Tensor& video, c10::IntArrayRef scales, int64_t patch_size) {
  const PatchesCall call = prepare_multiscale_patches(video, scales, patch_size);
  run_cpu(call.params);
  return call.out;
}

at::Tensor gather_patches_cpu(const at::Tensor& video, const at::Tensor& ids, const at::Tensor& frame_offsets,
                              c10::IntArrayRef scales, int64_t patch_size) {
  const PatchesCall call = prepare_gather_patches(video, ids, frame_offsets, scales, patch_size);
  run_cpu(call.params);
  return call.out;
}

at::Tensor select_step_cpu(const at::Tensor& logits, const at::Tensor& loss_pred,
                           const std::optional<at::Tensor>& requirement,
                           const std::optional<at::Tensor>& uniforms, at::Tensor& used, at::Tensor& n,
                           at::Tensor& finished, at::Tensor& done, at::Tensor& tokens,
                           at::Tensor& leftover_ids, at::Tensor& leftover_len, int64_t budget, bool first,
                           bool coupled, double temperature, int64_t top_k) {
  const SelectCall call = prepare_select_step(logits, loss_pred, requirement, uniforms, used, n, finished,
                                              done, tokens, leftover_ids, leftover_len, budget, first,
                                              coupled, temperature, top_k);
  // n indexes the token rows: a negative count would write before them (values checked on the
  // CPU only; the kernels also clamp the slot, so CUDA never writes out of bounds).
  const int64_t* count = call.params.n;
  for (int64_t b = 0; b < call.params.batch; ++b)
    TORCH_CHECK_VALUE(count[b] >= 0, "select_step: n[", b, "] = ", count[b], " must be >= 0 (slots filled)");
  select::select_cpu(call.params);
  return call.fed;
}

// One tensor argument of select_step: dtype, shape, device; contiguity for state updated in place.
void check_state(const char* name, const at::Tensor& t, at::ScalarType type, c10::IntArrayRef shape,
                 const at::Device& device, bool in_place) {
  TORCH_CHECK_TYPE(t.scalar_type() == type, "select_step: ", name, " must be ", dtype_name(type), ", got ",
                   dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.sizes() == shape, "select_step: ", name, " must have shape ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, "select_step: ", name, " must be on logits' device (", device,
                    "), got ", t.device());
  TORCH_CHECK_VALUE(!in_place || t.is_contiguous(), "select_step: ", name,
                    " is updated in place and must be contiguous");
}

}  // namespace

PatchesCall prepare_multiscale_patches(const at::Tensor& video, c10::IntArrayRef scales, int64_t patch_size) {
  PatchesCall call;
  call.params = video_params("multiscale_patches", video, scales, patch_size);
  patches::Params& p = call.params;
  const int64_t num_ids = p.scale_begin[p.num_scales];
  call.out = at::empty({video.size(0), video.size(1), num_ids, row_size(p)}, video.options());
  p.out = call.out.mutable_data_ptr();
  p.rows = p.frames * num_ids;
  return call;
}

PatchesCall prepare_gather_patches(const at::Tensor& video, const at::Tensor& ids,
                                   const at::Tensor& frame_offsets, c10::IntArrayRef scales,
                                   int64_t patch_size) {
  PatchesCall call;
  call.params = video_params("gather_patches", video, scales, patch_size);
  patches::Params& p = call.params;
  for (const auto& [name, t] : {std::pair{"ids", &ids}, std::pair{"frame_offsets", &frame_offsets}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, "gather_patches: ", name, " must be int64, got ",
                     dtype_name(t->scalar_type()));
    TORCH_CHECK_VALUE(t->dim() == 1, "gather_patches: ", name, " must be 1-D, got shape ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == video.device(), "gather_patches: ", name, " must be on video's device (",
                      video.device(), "), got ", t->device());
  }
  TORCH_CHECK_VALUE(frame_offsets.numel() == p.frames + 1,
                    "gather_patches: frame_offsets must have B*T + 1 = ", p.frames + 1,
                    " elements for video of shape ", video.sizes(), ", got ", frame_offsets.numel());
  call.ids = ids.contiguous();
  call.frame_offsets = frame_offsets.contiguous();
  const int64_t num_ids = p.scale_begin[p.num_scales];
  if (ids.is_cpu()) check_ids_values(call.ids, call.frame_offsets, num_ids);

  call.out = at::empty({ids.size(0), row_size(p)}, video.options());
  p.out = call.out.mutable_data_ptr();
  p.ids = call.ids.const_data_ptr<int64_t>();
  p.frame_offsets = call.frame_offsets.const_data_ptr<int64_t>();
  p.rows = ids.size(0);
  return call;
}

SelectCall prepare_select_step(const at::Tensor& logits, const at::Tensor& loss_pred,
                               const std::optional<at::Tensor>& requirement,
                               const std::optional<at::Tensor>& uniforms, const at::Tensor& used,
                               const at::Tensor& n, const at::Tensor& finished, const at::Tensor& done,
                               const at::Tensor& tokens, const at::Tensor& leftover_ids,
                               const at::Tensor& leftover_len, int64_t budget, bool first, bool coupled,
                               double temperature, int64_t top_k) {
  TORCH_CHECK_VALUE(logits.dim() == 3, "select_step: logits must be (B, K, V), got shape ", logits.sizes());
  const int64_t B = logits.size(0), K = logits.size(1), V = logits.size(2);
  TORCH_CHECK_VALUE(K > 0 && V > 1, "select_step: logits needs K > 0 heads and V > 1 ids, got shape ",
                    logits.sizes());
  TORCH_CHECK_VALUE(budget > 0, "select_step: budget must be positive, got ", budget);
  TORCH_CHECK_VALUE(temperature > 0, "select_step: temperature must be positive, got ", temperature);
  TORCH_CHECK_VALUE(top_k > 0, "select_step: top_k must be positive, got ", top_k);
  const at::Device device = logits.device();
  check_state("logits", logits, at::kFloat, {B, K, V}, device, false);
  check_state("loss_pred", loss_pred, at::kFloat, {B, K}, device, false);
  if (requirement) check_state("requirement", *requirement, at::kFloat, {B}, device, false);
  if (uniforms) check_state("uniforms", *uniforms, at::kFloat, {B, K}, device, false);
  check_state("used", used, at::kBool, {B, V}, device, true);
  check_state("n", n, at::kLong, {B}, device, true);
  check_state("finished", finished, at::kBool, {B}, device, true);
  check_state("done", done, at::kBool, {B}, device, true);
  TORCH_CHECK_VALUE(tokens.dim() == 2 && tokens.size(1) >= budget + K, "select_step: tokens must be (B, W) with W >= budget + K = ",
                    budget + K, ", got shape ", tokens.sizes());
  check_state("tokens", tokens, at::kLong, {B, tokens.size(1)}, device, true);
  check_state("leftover_ids", leftover_ids, at::kLong, {B, K}, device, true);
  check_state("leftover_len", leftover_len, at::kLong, {B}, device, true);

  SelectCall call;
  call.logits = logits.contiguous();
  call.loss_pred = loss_pred.contiguous();
  if (requirement) call.requirement = requirement->contiguous();
  if (uniforms) call.uniforms = uniforms->contiguous();
  const auto longs = logits.options().dtype(at::kLong);
  call.fed = at::empty({B, K}, longs);
  call.scores = at::empty({B, K, V}, logits.options());
  call.picks = at::empty({B, K}, longs);
  call.selected = at::empty({B, K}, logits.options().dtype(at::kByte));

  select::Params& p = call.params;
  p.logits = call.logits.const_data_ptr<float>();
  p.loss_pred = call.loss_pred.const_data_ptr<float>();
  p.requirement = requirement ? call.requirement.const_data_ptr<float>() : nullptr;
  p.uniforms = uniforms ? call.uniforms.const_data_ptr<float>() : nullptr;
  p.temperature = static_cast<float>(temperature);
  p.top_k = static_cast<int>(std::min<int64_t>(top_k, V));
  p.batch = B;
  p.k = static_cast<int>(K);
  p.vocab = static_cast<int>(V);
  p.budget = budget;
  p.token_width = tokens.size(1);
  p.first = first;
  p.coupled = coupled;
  p.used = reinterpret_cast<uint8_t*>(used.mutable_data_ptr<bool>());
  p.n = n.mutable_data_ptr<int64_t>();
  p.finished = reinterpret_cast<uint8_t*>(finished.mutable_data_ptr<bool>());
  p.done = reinterpret_cast<uint8_t*>(done.mutable_data_ptr<bool>());
  p.tokens = tokens.mutable_data_ptr<int64_t>();
  p.leftover_ids = leftover_ids.mutable_data_ptr<int64_t>();
  p.leftover_len = leftover_len.mutable_data_ptr<int64_t>();
  p.fed = call.fed.mutable_data_ptr<int64_t>();
  p.scores = call.scores.mutable_data_ptr<float>();
  p.picks = call.picks.mutable_data_ptr<int64_t>();
  p.selected = call.selected.mutable_data_ptr<uint8_t>();
  return call;
}

TORCH_LIBRARY(autogaze_ext, m) {
  m.set_python_module("autogaze_ext.ops");  // where the fake (meta) implementations live
  m.def("multiscale_patches(Tensor video, int[] scales, int patch_size) -> Tensor");
  m.def(
      "gather_patches(Tensor video, Tensor ids, Tensor frame_offsets, int[] scales, int patch_size) -> "
      "Tensor");
  m.def(
      "select_step(Tensor logits, Tensor loss_pred, Tensor? requirement, Tensor? uniforms, Tensor(a!) used, "
      "Tensor(b!) n, Tensor(c!) finished, Tensor(d!) done, Tensor(e!) tokens, Tensor(f!) leftover_ids, "
      "Tensor(g!) leftover_len, int budget, bool first, bool coupled, float temperature, int top_k) -> Tensor");
}

TORCH_LIBRARY_IMPL(autogaze_ext, CPU, m) {
  m.impl("multiscale_patches", &multiscale_patches_cpu);
  m.impl("gather_patches", &gather_patches_cpu);
  m.impl("select_step", &select_step_cpu);
}

#ifndef AUTOGAZE_WITH_CUDA
// CUDA tensors reaching a CPU-only build get this error rather than the dispatcher's.
[[noreturn]] void no_cuda_kernels(const char* op) {
  TORCH_CHECK(false, op,
              ": autogaze_ext was built without CUDA kernels (build_info()['cuda'] is False); "
              "reinstall with a CUDA build of torch and nvcc on PATH, or AUTOGAZE_CUDA=ON");
}

TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) {
  m.impl("multiscale_patches", [](const at::Tensor&, c10::IntArrayRef, int64_t) -> at::Tensor {
    no_cuda_kernels("multiscale_patches");
  });
  m.impl("gather_patches",
         [](const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::IntArrayRef,
            int64_t) -> at::Tensor { no_cuda_kernels("gather_patches"); });
  m.impl("select_step",
         [](const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
            const std::optional<at::Tensor>&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
            at::Tensor&, at::Tensor&, int64_t, bool, bool, double, int64_t) -> at::Tensor {
           no_cuda_kernels("select_step");
         });
}
#endif

}  // namespace autogaze

namespace {

pybind11::list split_words(const std::string& text) {
  pybind11::list words;
  std::istringstream stream(text);
  for (std::string word; stream >> word;) words.append(word);
  return words;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "autogaze_ext native ops (registered under torch.ops.autogaze_ext) and build information";
  m.def(
      "build_info",
      [] {
        pybind11::dict info;
        info["version"] = AUTOGAZE_VERSION;
        info["cuda"] = autogaze::kWithCuda;
        info["cuda_version"] = AUTOGAZE_CUDA_VERSION;
        info["cuda_archs"] = split_words(AUTOGAZE_CUDA_ARCHS);
        info["torch_version"] = AUTOGAZE_TORCH_VERSION;
        info["cxx_compiler"] = AUTOGAZE_CXX_COMPILER;
        info["sanitizers"] = AUTOGAZE_SANITIZERS;  // "" unless built with AUTOGAZE_SANITIZE=ON
        return info;
      },
      "How this extension was built: version, cuda, cuda_version, cuda_archs, torch_version, cxx_compiler, "
      "sanitizers.");
}

// ---- varlen_attention (csrc/attention) ----------------------------------------------------------
#include "attention/attention_rules.h"

namespace autogaze {

AttentionCall prepare_varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& key_lo, const at::Tensor& key_hi, double scale) {
  constexpr const char* op = "varlen_attention";
  for (const auto& [name, t] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    TORCH_CHECK_VALUE(t->dim() == 3, op, ": ", name, " must be 3-D (L, heads, head_dim), got shape ",
                      t->sizes());
    TORCH_CHECK_VALUE(t->device() == q.device(), op, ": ", name, " must be on q's device (", q.device(),
                      "), got ", t->device());
  }
  const auto type = q.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, op,
                   ": q must be float32, bfloat16 or float16, got ", dtype_name(type));
  TORCH_CHECK_TYPE(k.scalar_type() == type && v.scalar_type() == type, op,
                   ": q, k and v must have the same dtype, got ", dtype_name(type), ", ",
                   dtype_name(k.scalar_type()), ", ", dtype_name(v.scalar_type()));
  const int64_t L = q.size(0), H = q.size(1), D = q.size(2), Hkv = k.size(1);
  TORCH_CHECK_VALUE(H > 0 && D > 0, op, ": q needs heads > 0 and head_dim > 0, got shape ", q.sizes());
  TORCH_CHECK_VALUE(k.size(0) == L && k.size(2) == D && Hkv > 0, op,
                    ": k must be (L, kv_heads, head_dim) = (", L, ", kv_heads > 0, ", D, ") for q of shape ",
                    q.sizes(), ", got ", k.sizes());
  TORCH_CHECK_VALUE(v.sizes() == k.sizes(), op, ": v must have k's shape ", k.sizes(), ", got ", v.sizes());
  TORCH_CHECK_VALUE(H % Hkv == 0, op, ": q's heads (", H, ") must be a multiple of k's and v's kv_heads (",
                    Hkv, ")");
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(H <= kMaxInt && D <= kMaxInt, op, ": heads and head_dim must fit in int32, got shape ",
                    q.sizes());
  for (const auto& [name, t] : {std::pair{"key_lo", &key_lo}, std::pair{"key_hi", &key_hi}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
                     dtype_name(t->scalar_type()));
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == L, op, ": ", name, " must have shape (L,) = (", L,
                      ",), got ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == q.device(), op, ": ", name, " must be on q's device (", q.device(),
                      "), got ", t->device());
  }

  AttentionCall call;
  call.q = q.contiguous();
  call.k = k.contiguous();
  call.v = v.contiguous();
  call.key_lo = key_lo.contiguous();
  call.key_hi = key_hi.contiguous();
  if (q.is_cpu()) {
    const int64_t* lo = call.key_lo.const_data_ptr<int64_t>();
    const int64_t* hi = call.key_hi.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < L; ++i)
      TORCH_CHECK_VALUE(attention::valid_range(lo[i], hi[i], L), op, ": query ", i,
                        " must see at least one key: need 0 <= key_lo[i] < key_hi[i] <= L = ", L,
                        ", got key_lo[", i, "] = ", lo[i], ", key_hi[", i, "] = ", hi[i]);
  }
  call.out = at::empty({L, H, D}, q.options());

  attention::Params& p = call.params;
  p.q = call.q.const_data_ptr();
  p.k = call.k.const_data_ptr();
  p.v = call.v.const_data_ptr();
  p.out = call.out.mutable_data_ptr();
  p.key_lo = call.key_lo.const_data_ptr<int64_t>();
  p.key_hi = call.key_hi.const_data_ptr<int64_t>();
  p.dtype = type == at::kFloat ? DType::kFloat32 : type == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat16;
  p.length = L;
  p.heads = static_cast<int>(H);
  p.kv_heads = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.scale = static_cast<float>(scale);
  return call;
}

namespace {

at::Tensor varlen_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& key_lo, const at::Tensor& key_hi, double scale) {
  const AttentionCall call = prepare_varlen_attention(q, k, v, key_lo, key_hi, scale);
  const attention::Params& p = call.params;
  const int64_t rows = p.length * p.heads;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) { attention::attention_cpu(p, begin, end); });
  return call.out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(autogaze_ext, m) {
  m.set_python_module("autogaze_ext.ops");
  m.def("varlen_attention(Tensor q, Tensor k, Tensor v, Tensor key_lo, Tensor key_hi, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(autogaze_ext, CPU, m) { m.impl("varlen_attention", &varlen_attention_cpu); }

#ifndef AUTOGAZE_WITH_CUDA
TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) {
  m.impl("varlen_attention",
         [](const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
            double) -> at::Tensor { no_cuda_kernels("varlen_attention"); });
}
#endif

}  // namespace autogaze

// ---- decode_step (csrc/decode) ------------------------------------------------------------------

namespace autogaze {

namespace decode {
// decode_cpu.cpp: one sample with its phases run through `par`.
using ParallelFor = std::function<void(int64_t count, const std::function<void(int64_t, int64_t)>& body)>;
void decode_cpu_sample(const Params& p, int64_t b, const ParallelFor& par);
}  // namespace decode

DecodeCall prepare_decode_step(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& visible,
                               const at::Tensor& cache_k, const at::Tensor& cache_v, const at::Tensor& key_mask,
                               int64_t cache_len, at::TensorList weights, const at::Tensor& inv_freq, double eps) {
  constexpr const char* op = "decode_step";
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  const auto device = x.device();
  auto check_device = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK_VALUE(t.device() == device, op, ": ", name, " must be on x's device (", device, "), got ",
                      t.device());
  };
  // x
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be 3-D (B, n, D), got shape ", x.sizes());
  const auto type = x.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, op,
                   ": x must be float32, bfloat16 or float16, got ", dtype_name(type));
  const int64_t B = x.size(0), n = x.size(1), D = x.size(2);
  TORCH_CHECK_VALUE(n >= 1 && D >= 1, op, ": x needs n >= 1 tokens and D >= 1, got shape ", x.sizes());
  TORCH_CHECK_VALUE(n <= kMaxInt && D <= kMaxInt, op, ": x's n and D must fit in int32, got shape ", x.sizes());
  // positions, visible
  TORCH_CHECK_TYPE(positions.scalar_type() == at::kLong, op, ": positions must be int64, got ",
                   dtype_name(positions.scalar_type()));
  TORCH_CHECK_VALUE(positions.dim() == 2 && positions.size(0) == B && positions.size(1) == n, op,
                    ": positions must have shape (B, n) = (", B, ", ", n, "), got ", positions.sizes());
  check_device("positions", positions);
  TORCH_CHECK_TYPE(visible.scalar_type() == at::kBool, op, ": visible must be bool, got ",
                   dtype_name(visible.scalar_type()));
  TORCH_CHECK_VALUE(visible.dim() == 2 && visible.size(0) == B && visible.size(1) == n, op,
                    ": visible must have shape (B, n) = (", B, ", ", n, "), got ", visible.sizes());
  check_device("visible", visible);
  // inv_freq
  TORCH_CHECK_TYPE(inv_freq.scalar_type() == at::kFloat, op, ": inv_freq must be float32, got ",
                   dtype_name(inv_freq.scalar_type()));
  TORCH_CHECK_VALUE(inv_freq.dim() == 1 && inv_freq.size(0) >= 1, op,
                    ": inv_freq must be 1-D (head_dim / 2,) and non-empty, got shape ", inv_freq.sizes());
  check_device("inv_freq", inv_freq);
  const int64_t hd = 2 * inv_freq.size(0);
  TORCH_CHECK_VALUE(hd <= decode::kMaxHeadDimCpu, op, ": head_dim = 2 * len(inv_freq) must be at most ",
                    decode::kMaxHeadDimCpu, ", got ", hd);
  // weights
  const int64_t count = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(count >= 12 && (count - 3) % 9 == 0, op,
                    ": weights must hold 9 tensors per layer then final norm, lm_head and "
                    "task_loss_prediction_head (9 * layers + 3, layers >= 1), got ",
                    count, " tensors");
  const int64_t layers = (count - 3) / 9;
  TORCH_CHECK_VALUE(layers <= decode::kMaxLayers, op, ": at most ", decode::kMaxLayers, " layers, got ", layers);
  static const char* const kNames[9] = {"input_layernorm", "q_proj", "k_proj", "v_proj", "o_proj",
                                        "post_attention_layernorm", "gate_proj", "up_proj", "down_proj"};
  auto name_of = [&](int64_t i) -> std::string {
    if (i >= 9 * layers) {
      static const char* const kTail[3] = {"model.norm", "lm_head", "task_loss_prediction_head"};
      return "weights[" + std::to_string(i) + "] (" + kTail[i - 9 * layers] + ".weight)";
    }
    return "weights[" + std::to_string(i) + "] (layer " + std::to_string(i / 9) + " " + kNames[i % 9] + ".weight)";
  };
  for (int64_t i = 0; i < count; ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK_TYPE(w.scalar_type() == type, op, ": ", name_of(i), " must have x's dtype (", dtype_name(type),
                     "), got ", dtype_name(w.scalar_type()));
    TORCH_CHECK_VALUE(w.device() == device, op, ": ", name_of(i), " must be on x's device (", device, "), got ",
                      w.device());
  }
  const at::Tensor& q0 = weights[1];
  const at::Tensor& k0 = weights[2];
  const at::Tensor& g0 = weights[6];
  TORCH_CHECK_VALUE(q0.dim() == 2 && q0.size(1) == D && q0.size(0) % hd == 0 && q0.size(0) > 0, op, ": ",
                    name_of(1), " must be (H * head_dim, D) with head_dim = ", hd, " (2 * len(inv_freq)), D = ", D,
                    ", got shape ", q0.sizes());
  TORCH_CHECK_VALUE(k0.dim() == 2 && k0.size(1) == D && k0.size(0) % hd == 0 && k0.size(0) > 0, op, ": ",
                    name_of(2), " must be (Hkv * head_dim, D) with head_dim = ", hd, ", D = ", D, ", got shape ",
                    k0.sizes());
  const int64_t H = q0.size(0) / hd, Hkv = k0.size(0) / hd;
  TORCH_CHECK_VALUE(H % Hkv == 0, op, ": the heads (", H, ", from q_proj) must be a multiple of the kv heads (", Hkv,
                    ", from k_proj)");
  TORCH_CHECK_VALUE(g0.dim() == 2 && g0.size(1) == D && g0.size(0) > 0, op, ": ", name_of(6),
                    " must be (I, D) with D = ", D, ", got shape ", g0.sizes());
  const int64_t I = g0.size(0);
  for (int64_t l = 0; l < layers; ++l) {
    const std::vector<std::vector<int64_t>> shapes = {{D}, {H * hd, D}, {Hkv * hd, D}, {Hkv * hd, D}, {D, H * hd},
                                                      {D}, {I, D},      {I, D},        {D, I}};
    for (int i = 0; i < 9; ++i) {
      const at::Tensor& w = weights[9 * l + i];
      TORCH_CHECK_VALUE(w.sizes() == c10::IntArrayRef(shapes[i]), op, ": ", name_of(9 * l + i), " must have shape ",
                        c10::IntArrayRef(shapes[i]), " (D = ", D, ", H = ", H, ", Hkv = ", Hkv, ", head_dim = ", hd,
                        ", I = ", I, "), got ", w.sizes());
    }
  }
  const at::Tensor& final_norm = weights[9 * layers];
  const at::Tensor& lm = weights[9 * layers + 1];
  const at::Tensor& tlp = weights[9 * layers + 2];
  TORCH_CHECK_VALUE(final_norm.dim() == 1 && final_norm.size(0) == D, op, ": ", name_of(9 * layers),
                    " must have shape (D,) = (", D, ",), got ", final_norm.sizes());
  TORCH_CHECK_VALUE(tlp.dim() == 2 && tlp.size(1) == D && tlp.size(0) > 0, op, ": ", name_of(9 * layers + 2),
                    " must be (K, D) with D = ", D, ", got shape ", tlp.sizes());
  const int64_t K = tlp.size(0);
  TORCH_CHECK_VALUE(lm.dim() == 2 && lm.size(1) == D && lm.size(0) % K == 0 && lm.size(0) > 0, op, ": ",
                    name_of(9 * layers + 1), " must be (K * V, D) with K = ", K, " (rows of task_loss_prediction_head), D = ",
                    D, ", got shape ", lm.sizes());
  const int64_t V = lm.size(0) / K;
  TORCH_CHECK_VALUE(lm.size(0) <= kMaxInt && I <= kMaxInt && H * hd <= kMaxInt, op,
                    ": weight sizes must fit in int32");
  // cache
  const std::vector<int64_t> cache_shape_prefix = {layers, B, Hkv};
  for (const auto& [name, t] : {std::pair{"cache_k", &cache_k}, std::pair{"cache_v", &cache_v}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == type, op, ": ", name, " must have x's dtype (", dtype_name(type), "), got ",
                     dtype_name(t->scalar_type()));
    TORCH_CHECK_VALUE(t->dim() == 5 && t->size(0) == layers && t->size(1) == B && t->size(2) == Hkv &&
                          t->size(4) == hd,
                      op, ": ", name, " must be (layers, B, Hkv, capacity, head_dim) = (", layers, ", ", B, ", ", Hkv,
                      ", capacity, ", hd, "), got ", t->sizes());
    TORCH_CHECK_VALUE(t->is_contiguous(), op, ": ", name, " must be contiguous (it is written in place)");
    check_device(name, *t);
  }
  TORCH_CHECK_VALUE(cache_v.sizes() == cache_k.sizes(), op, ": cache_v must have cache_k's shape ", cache_k.sizes(),
                    ", got ", cache_v.sizes());
  const int64_t capacity = cache_k.size(3);
  TORCH_CHECK_TYPE(key_mask.scalar_type() == at::kBool, op, ": key_mask must be bool, got ",
                   dtype_name(key_mask.scalar_type()));
  TORCH_CHECK_VALUE(key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == capacity, op,
                    ": key_mask must have shape (B, capacity) = (", B, ", ", capacity, "), got ", key_mask.sizes());
  TORCH_CHECK_VALUE(key_mask.is_contiguous(), op, ": key_mask must be contiguous (it is written in place)");
  check_device("key_mask", key_mask);
  TORCH_CHECK_VALUE(cache_len >= 0, op, ": cache_len must be >= 0, got ", cache_len);
  TORCH_CHECK_VALUE(cache_len + n <= capacity, op, ": the cache is too small: cache_len + n = ", cache_len, " + ", n,
                    " slots needed, capacity is ", capacity, " (reserve before the step)");
  TORCH_CHECK_VALUE(eps >= 0, op, ": eps must be >= 0, got ", eps);

  DecodeCall call;
  call.x = x.contiguous();
  call.positions = positions.contiguous();
  call.visible = visible.contiguous();
  call.inv_freq = inv_freq.contiguous();
  call.weights.reserve(count);
  for (const at::Tensor& w : weights) call.weights.push_back(w.contiguous());
  const auto f32 = x.options().dtype(at::kFloat);
  call.logits = at::empty({B, K, V}, f32);
  call.loss_pred = at::empty({B, K}, f32);
  const decode::Workspace ws = decode::workspace_layout(static_cast<int>(n), static_cast<int>(D), static_cast<int>(H),
                                                        static_cast<int>(Hkv), static_cast<int>(hd), static_cast<int>(I));
  call.workspace = at::empty({std::max<int64_t>(B, 1) * ws.total}, f32);

  decode::Params& p = call.params;
  p = decode::Params{};
  p.x = call.x.const_data_ptr();
  p.positions = call.positions.const_data_ptr<int64_t>();
  p.visible = reinterpret_cast<const uint8_t*>(call.visible.const_data_ptr<bool>());
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* w = call.weights.data() + 9 * l;
    p.layer[l] = decode::Layer{w[0].const_data_ptr(), w[1].const_data_ptr(), w[2].const_data_ptr(),
                               w[3].const_data_ptr(), w[4].const_data_ptr(), w[5].const_data_ptr(),
                               w[6].const_data_ptr(), w[7].const_data_ptr(), w[8].const_data_ptr()};
  }
  p.final_norm = call.weights[9 * layers].const_data_ptr();
  p.lm_head = call.weights[9 * layers + 1].const_data_ptr();
  p.loss_head = call.weights[9 * layers + 2].const_data_ptr();
  p.inv_freq = call.inv_freq.const_data_ptr<float>();
  p.cache_k = cache_k.mutable_data_ptr();
  p.cache_v = cache_v.mutable_data_ptr();
  p.key_mask = reinterpret_cast<uint8_t*>(key_mask.mutable_data_ptr<bool>());
  p.logits = call.logits.mutable_data_ptr<float>();
  p.loss_pred = call.loss_pred.mutable_data_ptr<float>();
  p.workspace = call.workspace.mutable_data_ptr<float>();
  p.dtype = type == at::kFloat ? DType::kFloat32 : type == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat16;
  p.batch = B;
  p.cache_len = cache_len;
  p.capacity = capacity;
  p.n = static_cast<int>(n);
  p.layers = static_cast<int>(layers);
  p.hidden = static_cast<int>(D);
  p.heads = static_cast<int>(H);
  p.kv_heads = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(hd);
  p.intermediate = static_cast<int>(I);
  p.k = static_cast<int>(K);
  p.vocab = static_cast<int>(V);
  p.eps = static_cast<float>(eps);
  p.workspace_per_sample = ws.total;
  return call;
}

namespace {

std::tuple<at::Tensor, at::Tensor> decode_step_cpu(const at::Tensor& x, const at::Tensor& positions,
                                                   const at::Tensor& visible, at::Tensor& cache_k, at::Tensor& cache_v,
                                                   at::Tensor& key_mask, int64_t cache_len, at::TensorList weights,
                                                   const at::Tensor& inv_freq, double eps) {
  const DecodeCall call =
      prepare_decode_step(x, positions, visible, cache_k, cache_v, key_mask, cache_len, weights, inv_freq, eps);
  const decode::Params& p = call.params;
  const int64_t threads = at::get_num_threads();
  if (p.batch >= threads || threads <= 1) {
    at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) { decode::decode_cpu(p, begin, end); });
  } else {
    // Fewer samples than threads: one sample at a time, its phases (matvec rows, kv heads) spread.
    const decode::ParallelFor par = [](int64_t count, const std::function<void(int64_t, int64_t)>& body) {
      at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) { body(begin, end); });
    };
    for (int64_t b = 0; b < p.batch; ++b) decode::decode_cpu_sample(p, b, par);
  }
  return {call.logits, call.loss_pred};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(autogaze_ext, m) {
  m.set_python_module("autogaze_ext.ops");
  m.def(
      "decode_step(Tensor x, Tensor positions, Tensor visible, Tensor(a!) cache_k, Tensor(b!) cache_v, "
      "Tensor(c!) key_mask, int cache_len, Tensor[] weights, Tensor inv_freq, float eps) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(autogaze_ext, CPU, m) { m.impl("decode_step", &decode_step_cpu); }

#ifndef AUTOGAZE_WITH_CUDA
TORCH_LIBRARY_IMPL(autogaze_ext, CUDA, m) {
  m.impl("decode_step",
         [](const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, int64_t,
            at::TensorList, const at::Tensor&, double) -> std::tuple<at::Tensor, at::Tensor> {
           no_cuda_kernels("decode_step");
         });
}
#endif

}  // namespace autogaze

// The autogaze_ext op library: schemas, argument checks, CPU implementations, and the `_C`
// Python module's build_info(). CUDA implementations live in bindings_cuda.cpp.

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>

#include "bindings.h"
#include "patches/patches.h"

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

TORCH_LIBRARY(autogaze_ext, m) {
  m.set_python_module("autogaze_ext.ops");  // where the fake (meta) implementations live
  m.def("multiscale_patches(Tensor video, int[] scales, int patch_size) -> Tensor");
  m.def(
      "gather_patches(Tensor video, Tensor ids, Tensor frame_offsets, int[] scales, int patch_size) -> "
      "Tensor");
}

TORCH_LIBRARY_IMPL(autogaze_ext, CPU, m) {
  m.impl("multiscale_patches", &multiscale_patches_cpu);
  m.impl("gather_patches", &gather_patches_cpu);
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
        return info;
      },
      "How this extension was built: version, cuda, cuda_version, cuda_archs, torch_version, cxx_compiler.");
}

#pragma once
// float <-> storage-type conversions for the CUDA kernels (round to nearest even), so every kernel
// accumulates in float32 whatever the tensors hold.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace autogaze {

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float to_float(__half v) { return __half2float(v); }

template <typename T> __device__ T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ inline __half from_float<__half>(float v) { return __float2half_rn(v); }

}  // namespace autogaze

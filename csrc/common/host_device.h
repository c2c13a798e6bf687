#pragma once
// Marks small inline helpers shared by the CPU (.cpp) and CUDA (.cu) kernels.

#if defined(__CUDACC__)
#define AUTOGAZE_HOST_DEVICE __host__ __device__
#else
#define AUTOGAZE_HOST_DEVICE
#endif

# autogaze_check_cuda_major(<nvcc version> <torch.version.cuda>): fatal unless both have the same
# CUDA major version. A mismatch links a second CUDA runtime into _C beside torch's, so kernel
# launch errors go unseen (torch.utils.cpp_extension refuses the same mismatch). Kept apart from
# cuda.cmake so that tests can run it with `cmake -P`.
function(autogaze_check_cuda_major nvcc_version torch_cuda)
  string(REGEX MATCH "^[0-9]+" _nvcc_major "${nvcc_version}")
  string(REGEX MATCH "^[0-9]+" _torch_major "${torch_cuda}")
  if(_nvcc_major STREQUAL "" OR _torch_major STREQUAL "")
    message(FATAL_ERROR "autogaze_ext: cannot read the CUDA versions: nvcc '${nvcc_version}', "
                        "torch.version.cuda '${torch_cuda}'")
  endif()
  if(NOT _nvcc_major EQUAL _torch_major)
    message(FATAL_ERROR
      "autogaze_ext: nvcc is CUDA ${nvcc_version} but torch was built with CUDA ${torch_cuda}: "
      "the CUDA major versions (${_nvcc_major} vs ${_torch_major}) must match. Use the CUDA "
      "${_torch_major} toolkit (CUDACXX=/path/to/cuda-${_torch_major}/bin/nvcc), install a torch "
      "built for CUDA ${_nvcc_major}, or build without CUDA kernels under a CPU torch.")
  endif()
endfunction()

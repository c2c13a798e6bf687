# Finds Python, pybind11 and Torch (the torch installed in the building Python, so build with
# `pip install --no-build-isolation .`). Defines autogaze_python_eval() and AUTOGAZE_TORCH_VERSION.

find_package(Python 3.10 REQUIRED COMPONENTS Interpreter Development.Module)

# autogaze_python_eval(<var> <python code>): <var> = stdout of `python -c <code>`, fatal on error.
function(autogaze_python_eval var code)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "${code}"
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "autogaze_ext: `${Python_EXECUTABLE} -c \"${code}\"` failed:\n${err}")
  endif()
  set(${var} "${out}" PARENT_SCOPE)
endfunction()

autogaze_python_eval(_pybind11_dir "import pybind11; print(pybind11.get_cmake_dir())")
find_package(pybind11 CONFIG REQUIRED HINTS "${_pybind11_dir}")

autogaze_python_eval(_torch_prefix "import torch.utils; print(torch.utils.cmake_prefix_path)")
autogaze_python_eval(AUTOGAZE_TORCH_VERSION "import torch; print(torch.__version__)")
autogaze_python_eval(AUTOGAZE_TORCH_CUDA "import torch; print(torch.version.cuda or '')")
list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
message(STATUS "autogaze_ext: torch ${AUTOGAZE_TORCH_VERSION} (CUDA: '${AUTOGAZE_TORCH_CUDA}')")

# Decide on CUDA before find_package(Torch): a CUDA torch's config enables the CUDA language itself
# and turns TORCH_CUDA_ARCH_LIST into nvcc -gencode flags.
include(${CMAKE_CURRENT_LIST_DIR}/cuda.cmake)

find_package(Torch REQUIRED)

# The AUTOGAZE_CUDA option (AUTO, ON, OFF), nvcc detection and the CUDA arch list, before
# find_package(Torch). Needs AUTOGAZE_TORCH_CUDA (torch.version.cuda) from torch.cmake.
# Sets AUTOGAZE_WITH_CUDA, and for build_info() AUTOGAZE_CUDA_ARCHS (space separated) and
# AUTOGAZE_CUDA_VERSION (nvcc), both empty without CUDA kernels.

set(AUTOGAZE_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO (if torch has CUDA and nvcc is found), ON, OFF")
set_property(CACHE AUTOGAZE_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${AUTOGAZE_CUDA}" _cuda_mode)
if(NOT _cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "autogaze_ext: AUTOGAZE_CUDA must be AUTO, ON or OFF, got '${AUTOGAZE_CUDA}'")
endif()

set(AUTOGAZE_WITH_CUDA OFF)
set(AUTOGAZE_CUDA_ARCHS "")
set(AUTOGAZE_CUDA_VERSION "")

if(AUTOGAZE_TORCH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
endif()

if(AUTOGAZE_TORCH_CUDA AND CMAKE_CUDA_COMPILER)
  # A CUDA build of torch enables CUDA in its own config (whatever AUTOGAZE_CUDA says); set it up
  # here first. torch ignores CMAKE_CUDA_ARCHITECTURES and reads TORCH_CUDA_ARCH_LIST (variable or
  # environment), probing the local GPU when neither is set: default to A100 and H100 instead.
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST)
    if(DEFINED ENV{TORCH_CUDA_ARCH_LIST})
      set(TORCH_CUDA_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}")
    else()
      set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
    endif()
  endif()
  string(REPLACE " " ";" TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}")
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)  # the cudart torch uses, not a second static copy
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  include(${CMAKE_CURRENT_LIST_DIR}/cuda_version.cmake)
  autogaze_check_cuda_major("${CMAKE_CUDA_COMPILER_VERSION}" "${AUTOGAZE_TORCH_CUDA}")
  # torch's config runs the legacy FindCUDA, which guesses the toolkit from nvcc's folder (wrong for
  # a wrapper script like /usr/local/bin/nvcc): point it at the toolkit the CUDA language found.
  if(NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
    set(CUDA_TOOLKIT_ROOT_DIR "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")
  endif()
  if(NOT _cuda_mode STREQUAL "OFF")
    set(AUTOGAZE_WITH_CUDA ON)
    string(REPLACE ";" " " AUTOGAZE_CUDA_ARCHS "${TORCH_CUDA_ARCH_LIST}")
    set(AUTOGAZE_CUDA_VERSION "${CMAKE_CUDA_COMPILER_VERSION}")
  endif()
elseif(_cuda_mode STREQUAL "ON")
  message(FATAL_ERROR "autogaze_ext: AUTOGAZE_CUDA=ON needs a CUDA build of torch and nvcc; "
                      "torch.version.cuda='${AUTOGAZE_TORCH_CUDA}', nvcc='${CMAKE_CUDA_COMPILER}'")
endif()

if(AUTOGAZE_WITH_CUDA)
  message(STATUS "autogaze_ext: CUDA kernels ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${TORCH_CUDA_ARCH_LIST})")
else()
  message(STATUS "autogaze_ext: CUDA kernels OFF (AUTOGAZE_CUDA=${AUTOGAZE_CUDA}, torch CUDA '${AUTOGAZE_TORCH_CUDA}')")
endif()

# Use ccache for C++ and CUDA compiles when it is installed (rebuilds after `pip install` become cheap).
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  message(STATUS "autogaze_ext: using ccache (${CCACHE_PROGRAM})")
  set(CMAKE_CXX_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
  set(CMAKE_CUDA_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
endif()

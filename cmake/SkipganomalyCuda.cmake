# Decides SKIPGANOMALY_WITH_CUDA from SKIPGANOMALY_CUDA (AUTO|ON|OFF) and
# provides skipganomaly_add_cuda_module(), which adds the CUDA backend as its own shared
# library, skipganomaly_cuda (libskipganomaly_cuda.so.<version>): the library loads it at run
# time (src/cuda_loader.cpp), so neither the library nor a program using it links CUDA.
#
# AUTO turns CUDA on when nvcc and cuDNN are both found. Building the CUDA
# sources needs no GPU; whether one is present is decided at run time.
set(SKIPGANOMALY_WITH_CUDA OFF)
if(NOT SKIPGANOMALY_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  find_library(SKIPGANOMALY_CUDNN_LIBRARY cudnn
    HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu)
  find_path(SKIPGANOMALY_CUDNN_INCLUDE_DIR cudnn.h
    HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include /usr/include)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND SKIPGANOMALY_CUDNN_LIBRARY AND SKIPGANOMALY_CUDNN_INCLUDE_DIR)
    set(SKIPGANOMALY_WITH_CUDA ON)
  elseif(SKIPGANOMALY_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SKIPGANOMALY_CUDA=ON but nvcc, the CUDA toolkit or cuDNN was not found "
      "(nvcc: '${CMAKE_CUDA_COMPILER}', cudnn: '${SKIPGANOMALY_CUDNN_LIBRARY}')")
  endif()
endif()

if(SKIPGANOMALY_WITH_CUDA)
  # PTX for Ampere (runs anywhere newer through the JIT) and native code for Hopper.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80-virtual;90-real")
  endif()
  enable_language(CUDA)
  # CMake 3.25 knows no flag for C++20 CUDA with nvcc (nvcc >= 12 takes -std=c++20).
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
endif()
message(STATUS "skipganomaly: CUDA backend ${SKIPGANOMALY_WITH_CUDA} (requested ${SKIPGANOMALY_CUDA})")

function(skipganomaly_add_cuda_module)
  file(GLOB cuda_sources CONFIGURE_DEPENDS
    ${PROJECT_SOURCE_DIR}/src/cuda/*.cu ${PROJECT_SOURCE_DIR}/src/cuda/*.cpp)
  add_library(skipganomaly_cuda SHARED ${cuda_sources})
  # The module does not link the library: the few library functions its sources call are
  # stand-ins in src/cuda/module.cpp, fed by the library when it loads the module, and
  # --no-undefined keeps it that way. The version script (not -fvisibility, which would hide
  # sga::cuda::* too) exports the entry point, and sga::cuda::* for the CUDA tests and
  # benchmarks, which link the module directly; everything else stays local.
  target_include_directories(skipganomaly_cuda PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include ${PROJECT_SOURCE_DIR}/src
    ${SKIPGANOMALY_CUDNN_INCLUDE_DIR})
  target_link_libraries(skipganomaly_cuda PRIVATE CUDA::cudart_static ${SKIPGANOMALY_CUDNN_LIBRARY})
  set(version_script ${PROJECT_SOURCE_DIR}/src/cuda/module.map)
  target_link_options(skipganomaly_cuda PRIVATE
    -Wl,--no-undefined -Wl,--version-script=${version_script})
  # Both sides must come from the same build (src/cuda/module.hpp), so the file name carries
  # the whole version.
  set_target_properties(skipganomaly_cuda PROPERTIES
    CUDA_SEPARABLE_COMPILATION OFF
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION}
    LINK_DEPENDS ${version_script})
  target_compile_options(skipganomaly_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
endfunction()

# Decides SKIPGANOMALY_WITH_CUDA from SKIPGANOMALY_CUDA (AUTO|ON|OFF) and
# provides skipganomaly_add_cuda_sources(target).
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

function(skipganomaly_add_cuda_sources target)
  file(GLOB cuda_sources CONFIGURE_DEPENDS
    ${PROJECT_SOURCE_DIR}/src/cuda/*.cu ${PROJECT_SOURCE_DIR}/src/cuda/*.cpp)
  target_sources(${target} PRIVATE ${cuda_sources})
  target_include_directories(${target} PRIVATE ${SKIPGANOMALY_CUDNN_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE CUDA::cudart_static ${SKIPGANOMALY_CUDNN_LIBRARY})
  set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-fopenmp>)
endfunction()

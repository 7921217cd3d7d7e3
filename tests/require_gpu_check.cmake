# A missing GPU must be reported, never hidden: runs a CUDA test program with every GPU
# hidden (CUDA_VISIBLE_DEVICES=-1, so this holds on a GPU machine too) and requires
#   1. without SKIPGANOMALY_REQUIRE_GPU: exit 0, each test skipped with the exact reason;
#   2. with SKIPGANOMALY_REQUIRE_GPU=1: a failing exit and the reason in the failure.
# Usage: cmake -DPROGRAM=<test_cuda> -DFILTER=<catch2 test spec> -P require_gpu_check.cmake
foreach(variable PROGRAM FILTER)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "require_gpu_check.cmake: -D${variable}=... is required")
  endif()
endforeach()

execute_process(
  COMMAND ${CMAKE_COMMAND} -E env --unset=SKIPGANOMALY_REQUIRE_GPU CUDA_VISIBLE_DEVICES=-1
          ${PROGRAM} ${FILTER}
  RESULT_VARIABLE skip_result OUTPUT_VARIABLE skip_output ERROR_VARIABLE skip_output TIMEOUT 120)
if(NOT skip_result EQUAL 0)
  message(FATAL_ERROR "without SKIPGANOMALY_REQUIRE_GPU a hidden GPU must skip, but ${PROGRAM} exited "
    "with '${skip_result}':\n${skip_output}")
endif()
# CUDA builds: "cudaGetDeviceCount failed: cudaErrorNoDevice: ..." (or the driver's own error);
# CPU-only builds: "this build of skipganomaly has no CUDA backend".
if(NOT skip_output MATCHES "SKIPPED: no usable CUDA device: (cudaGetDeviceCount|device |.*cannot run|this build)")
  message(FATAL_ERROR "the skip does not carry the exact reason:\n${skip_output}")
endif()

execute_process(
  COMMAND ${CMAKE_COMMAND} -E env CUDA_VISIBLE_DEVICES=-1 SKIPGANOMALY_REQUIRE_GPU=1 ${PROGRAM} ${FILTER}
  RESULT_VARIABLE require_result OUTPUT_VARIABLE require_output ERROR_VARIABLE require_output TIMEOUT 120)
if(require_result EQUAL 0)
  message(FATAL_ERROR "with SKIPGANOMALY_REQUIRE_GPU=1 and no GPU, ${PROGRAM} must fail, but it passed:\n"
    "${require_output}")
endif()
if(NOT require_output MATCHES "SKIPGANOMALY_REQUIRE_GPU is set but no usable GPU: ")
  message(FATAL_ERROR "with SKIPGANOMALY_REQUIRE_GPU=1 the failure does not say why:\n${require_output}")
endif()
if(require_output MATCHES "SKIPPED:")
  message(FATAL_ERROR "with SKIPGANOMALY_REQUIRE_GPU=1 a test still reported itself skipped:\n${require_output}")
endif()
message(STATUS "a hidden GPU skips with its reason, and fails under SKIPGANOMALY_REQUIRE_GPU=1")

# The public headers (include/skipganomaly/*.hpp; the engine is include/skipganomaly/engine/)
# each compile on their own and include nothing from the engine, directly or through another
# header. Each is compiled alone with -fsyntax-only -H (GCC and Clang print every header they
# open); any engine/ path among them, or a compile error, is a FATAL_ERROR.
#
#   cmake -DSOURCE_DIR=<source tree> -DCONFIG_INCLUDE_DIR=<build>/include -DCXX_COMPILER=<c++>
#         [-DOPENCV_INCLUDE_DIRS=<dirs>] -P tests/check_public_headers.cmake
cmake_minimum_required(VERSION 3.25)

foreach(variable SOURCE_DIR CONFIG_INCLUDE_DIR CXX_COMPILER)
  if(NOT DEFINED ${variable} OR "${${variable}}" STREQUAL "")
    message(FATAL_ERROR "check_public_headers: pass -D${variable}=...")
  endif()
endforeach()

file(GLOB headers "${SOURCE_DIR}/include/skipganomaly/*.hpp")
list(LENGTH headers count)
if(count LESS 10)
  message(FATAL_ERROR "check_public_headers: only ${count} headers under ${SOURCE_DIR}/include/skipganomaly")
endif()
set(include_flags -I${SOURCE_DIR}/include -I${CONFIG_INCLUDE_DIR})
foreach(dir IN LISTS OPENCV_INCLUDE_DIRS)
  list(APPEND include_flags -isystem ${dir})
endforeach()

set(failures "")
set(checked 0)
foreach(header IN LISTS headers)
  get_filename_component(name "${header}" NAME)
  if(name STREQUAL "opencv.hpp" AND "${OPENCV_INCLUDE_DIRS}" STREQUAL "")
    message(STATUS "opencv.hpp: not checked, OpenCV is not installed")
    continue()
  endif()
  execute_process(
    COMMAND ${CXX_COMPILER} -std=c++20 -fsyntax-only -H -x c++ ${include_flags} "${header}"
    RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    string(APPEND failures "${name} does not compile on its own:\n${err}\n")
    continue()
  endif()
  string(REGEX MATCHALL "[^\n]*skipganomaly/engine/[^\n]*" engine_lines "${err}")
  if(engine_lines)
    list(GET engine_lines 0 first)
    string(STRIP "${first}" first)
    string(APPEND failures "${name} includes the engine (${first})\n")
  endif()
  math(EXPR checked "${checked} + 1")
endforeach()
if(failures)
  message(FATAL_ERROR "check_public_headers:\n${failures}")
endif()
message(STATUS "check_public_headers: ${checked} public headers compile alone and include no engine header")

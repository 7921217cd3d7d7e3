# Installs an already-built skipganomaly and builds a separate project against it, as a user
# would: find_package(skipganomaly) + target_link_libraries(... skipganomaly::skipganomaly).
#
#   cmake -DSOURCE_DIR=<source tree> -DBUILD_DIR=<configured and built tree>
#         -DWORK_DIR=<scratch folder> [-DCONFIG=Release] [-DGENERATOR=Ninja]
#         [-DCXX_COMPILER=/usr/bin/g++] [-DEXTRA_PREFIX_PATH=<dirs of dependencies>]
#         -P tests/test_install_consumer.cmake
#
# Steps: cmake --install BUILD_DIR --prefix WORK_DIR/prefix; configure examples/consumer with
# CMAKE_PREFIX_PATH=WORK_DIR/prefix (package registries off, so nothing is found by accident
# in the build tree); build it; run it. When BUILD_DIR built the examples, the installed
# `skipganomaly` tool is run too. Any failure is a FATAL_ERROR.
cmake_minimum_required(VERSION 3.25)

foreach(variable SOURCE_DIR BUILD_DIR WORK_DIR)
  if(NOT DEFINED ${variable} OR "${${variable}}" STREQUAL "")
    message(FATAL_ERROR "test_install_consumer: pass -D${variable}=...")
  endif()
  get_filename_component(${variable} "${${variable}}" ABSOLUTE)
endforeach()
if(NOT EXISTS "${BUILD_DIR}/CMakeCache.txt")
  message(FATAL_ERROR "test_install_consumer: ${BUILD_DIR} is not a configured build tree")
endif()
if(NOT EXISTS "${SOURCE_DIR}/examples/consumer/CMakeLists.txt")
  message(FATAL_ERROR "test_install_consumer: ${SOURCE_DIR}/examples/consumer/CMakeLists.txt not found")
endif()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/consumer-build")
file(REMOVE_RECURSE "${prefix}" "${consumer_build}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# Runs a command, echoing it; stops the test with its output when it fails.
function(run_step name)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "[${name}] ${shown}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "test_install_consumer: ${name} failed (${result}):\n${output}")
  endif()
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

# The build tree's own build type unless CONFIG says otherwise (multi-config generators).
set(config_arguments "")
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  set(config_arguments --config "${CONFIG}")
endif()

# 1. Install.
run_step(install "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" ${config_arguments})
file(GLOB_RECURSE package_configs "${prefix}/*/skipganomalyConfig.cmake")
if(NOT package_configs)
  message(FATAL_ERROR "test_install_consumer: no skipganomalyConfig.cmake under ${prefix}")
endif()

# 2. Configure the consumer against the prefix only.
set(prefix_path "${prefix}")
if(DEFINED EXTRA_PREFIX_PATH AND NOT EXTRA_PREFIX_PATH STREQUAL "")
  list(APPEND prefix_path ${EXTRA_PREFIX_PATH})
endif()
string(REPLACE ";" "\\;" prefix_path_argument "${prefix_path}")
set(configure_arguments
  -S "${SOURCE_DIR}/examples/consumer" -B "${consumer_build}"
  "-DCMAKE_PREFIX_PATH=${prefix_path_argument}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(DEFINED GENERATOR AND NOT GENERATOR STREQUAL "")
  list(APPEND configure_arguments -G "${GENERATOR}")
endif()
if(DEFINED CXX_COMPILER AND NOT CXX_COMPILER STREQUAL "")
  list(APPEND configure_arguments "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  list(APPEND configure_arguments "-DCMAKE_BUILD_TYPE=${CONFIG}")
else()
  list(APPEND configure_arguments -DCMAKE_BUILD_TYPE=Release)
endif()
run_step(configure "${CMAKE_COMMAND}" ${configure_arguments})

# The package must come from the prefix, not from the build tree or elsewhere.
file(STRINGS "${consumer_build}/CMakeCache.txt" found_dir REGEX "^skipganomaly_DIR:")
string(REGEX REPLACE "^skipganomaly_DIR:[A-Z]+=" "" found_dir "${found_dir}")
file(REAL_PATH "${prefix}" real_prefix)
file(REAL_PATH "${found_dir}" real_found_dir)
string(FIND "${real_found_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "test_install_consumer: skipganomaly was found in '${found_dir}', not under ${prefix}")
endif()

# 3. Build.
run_step(build "${CMAKE_COMMAND}" --build "${consumer_build}" ${config_arguments})

# 4. Run.
set(app "${consumer_build}/app")
if(NOT EXISTS "${app}" AND DEFINED CONFIG AND EXISTS "${consumer_build}/${CONFIG}/app")
  set(app "${consumer_build}/${CONFIG}/app")
endif()
run_step(run "${app}")
message(STATUS "[run] output:\n${step_output}")
if(NOT step_output MATCHES "skipganomaly [0-9]+\\.[0-9]+\\.[0-9]+" OR NOT step_output MATCHES "trained 1 epoch")
  message(FATAL_ERROR "test_install_consumer: unexpected output from the consumer:\n${step_output}")
endif()

# 5. The installed command-line tool, when the build tree has it.
file(STRINGS "${BUILD_DIR}/CMakeCache.txt" examples_option REGEX "^SKIPGANOMALY_BUILD_EXAMPLES:BOOL=")
if(examples_option MATCHES "=(ON|TRUE|1|YES)$")
  file(GLOB_RECURSE installed_tool "${prefix}/*/skipganomaly")
  list(FILTER installed_tool EXCLUDE REGEX "/include/|/cmake/")
  if(NOT installed_tool)
    message(FATAL_ERROR "test_install_consumer: the examples were built, but no skipganomaly tool was installed")
  endif()
  list(GET installed_tool 0 tool)
  run_step(tool "${tool}" --version)
  message(STATUS "[tool] ${step_output}")
endif()

message(STATUS "test_install_consumer: passed")

# Installs skipganomaly and builds a separate program against it, as a user would, on a
# machine without CUDA: find_package(skipganomaly) + target_link_libraries(... skipganomaly::
# skipganomaly), and the same program compiled by hand with pkg-config.
#
#   cmake -DSOURCE_DIR=<source tree> -DBUILD_DIR=<configured and built tree>
#         -DWORK_DIR=<scratch folder> [-DCONFIG=Release] [-DGENERATOR=Ninja]
#         [-DCXX_COMPILER=/usr/bin/g++] [-DEXTRA_PREFIX_PATH=<dirs of dependencies>]
#         [-DSHARED=ON] -P tests/test_install_consumer.cmake
#
# Steps: cmake --install BUILD_DIR --prefix WORK_DIR/prefix (with SHARED=ON: first configure,
# build and install a shared, CPU-only copy of SOURCE_DIR with BUILD_SHARED_LIBS=ON, library
# only); configure examples/consumer with CMAKE_PREFIX_PATH=WORK_DIR/prefix, package
# registries off, and CUDA hidden (no CUDAToolkit package, no /usr/local/cuda, no CUDA
# variables in the environment); build it; require that neither the program nor the library
# it links needs libcudart or libcudnn (readelf -d), and that nothing CUDA is on its link
# line; run it. Then the same with pkg-config. Where the install has the CUDA module, the
# program is also run with SKIPGANOMALY_CUDA_MODULE pointing at it: the module must load into
# a program built without CUDA. A shared library must export our API and not Eigen. When
# BUILD_DIR built the examples, the installed `skipganomaly` tool is run too. Any failure is a
# FATAL_ERROR.
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
set(pkgconfig_build "${WORK_DIR}/pkgconfig-build")
file(REMOVE_RECURSE "${prefix}" "${consumer_build}" "${pkgconfig_build}")
file(MAKE_DIRECTORY "${WORK_DIR}" "${pkgconfig_build}")

# The environment of a machine without CUDA: no CUDA variables, no CUDA folder on PATH, no
# library path, no module override.
set(path_without_cuda "$ENV{PATH}")
string(REPLACE ":" ";" path_without_cuda "${path_without_cuda}")
list(FILTER path_without_cuda EXCLUDE REGEX "cuda")
string(REPLACE ";" ":" path_without_cuda "${path_without_cuda}")
set(without_cuda "${CMAKE_COMMAND}" -E env --unset=CUDA_PATH --unset=CUDA_HOME --unset=CUDAToolkit_ROOT
  --unset=CUDACXX --unset=LD_LIBRARY_PATH --unset=SKIPGANOMALY_CUDA_MODULE "PATH=${path_without_cuda}")

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

# `binary` must not need any CUDA library, nor our CUDA module.
function(require_no_cuda_needed binary)
  run_step(readelf readelf -d "${binary}")
  string(REGEX MATCHALL "\\(NEEDED\\)[^\n]*" needed "${step_output}")
  message(STATUS "[readelf] ${binary}: ${needed}")
  if(needed MATCHES "cuda|cudnn|cublas")
    message(FATAL_ERROR "test_install_consumer: ${binary} needs a CUDA library: ${needed}")
  endif()
endfunction()

# The consumer's output: version, a trained detector, and the CUDA state in words.
function(check_consumer_output name output)
  message(STATUS "[${name}] output:\n${output}")
  if(NOT output MATCHES "skipganomaly [0-9]+\\.[0-9]+\\.[0-9]+" OR NOT output MATCHES "trained 1 epoch"
     OR NOT output MATCHES "cuda: ")
    message(FATAL_ERROR "test_install_consumer: unexpected output from ${name}:\n${output}")
  endif()
endfunction()

# The build tree's own build type unless CONFIG says otherwise (multi-config generators).
set(config_arguments "")
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  set(config_arguments --config "${CONFIG}")
endif()
set(generator_arguments "")
if(DEFINED GENERATOR AND NOT GENERATOR STREQUAL "")
  set(generator_arguments -G "${GENERATOR}")
endif()
set(compiler_arguments "")
if(DEFINED CXX_COMPILER AND NOT CXX_COMPILER STREQUAL "")
  set(compiler_arguments "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
  set(cxx "${CXX_COMPILER}")
else()
  find_program(cxx NAMES c++ g++ clang++ REQUIRED)
endif()
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  set(build_type "${CONFIG}")
else()
  set(build_type Release)
endif()

# 1. Install: the given build tree, or a shared, CPU-only copy built here.
set(library_build "${BUILD_DIR}")
if(SHARED)
  set(library_build "${WORK_DIR}/library-build")
  cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
  run_step(library-configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${library_build}"
    ${generator_arguments} ${compiler_arguments} "-DCMAKE_BUILD_TYPE=${build_type}"
    -DBUILD_SHARED_LIBS=ON -DSKIPGANOMALY_CUDA=OFF -DSKIPGANOMALY_BUILD_TESTS=OFF
    -DSKIPGANOMALY_BUILD_EXAMPLES=OFF -DSKIPGANOMALY_BUILD_BENCHMARKS=OFF)
  run_step(library-build "${CMAKE_COMMAND}" --build "${library_build}" --target skipganomaly
    --parallel ${jobs} ${config_arguments})
endif()
run_step(install "${CMAKE_COMMAND}" --install "${library_build}" --prefix "${prefix}" ${config_arguments})
file(STRINGS "${library_build}/CMakeCache.txt" shared_option REGEX "^BUILD_SHARED_LIBS:BOOL=")
set(library_is_shared OFF)
if(shared_option MATCHES "=(ON|TRUE|1|YES)$")
  set(library_is_shared ON)
endif()
file(GLOB_RECURSE package_configs "${prefix}/*/skipganomalyConfig.cmake")
file(GLOB_RECURSE pkgconfig_files "${prefix}/*/pkgconfig/skipganomaly.pc")
if(NOT package_configs OR NOT pkgconfig_files)
  message(FATAL_ERROR "test_install_consumer: no skipganomalyConfig.cmake or skipganomaly.pc under ${prefix}")
endif()
file(GLOB_RECURSE installed_libraries "${prefix}/*/libskipganomaly.so*")
list(FILTER installed_libraries EXCLUDE REGEX "skipganomaly_cuda")
file(GLOB_RECURSE cuda_module "${prefix}/*/libskipganomaly_cuda.so*")
if(library_is_shared)
  list(GET installed_libraries 0 shared_library)
  require_no_cuda_needed("${shared_library}")
  # Visibility: our API is exported, the implementation's libraries are not.
  run_step(exports nm -D -C --defined-only "${shared_library}")
  string(REGEX MATCHALL "\n[0-9a-f]+ [TW] [^\n]*" exported "${step_output}")
  list(LENGTH exported exported_count)
  message(STATUS "[exports] ${exported_count} functions exported by ${shared_library}")
  if(NOT step_output MATCHES "sga::Detector::fit" OR NOT step_output MATCHES "sga::cpu::conv2d_forward")
    message(FATAL_ERROR "test_install_consumer: ${shared_library} does not export the API:\n${step_output}")
  endif()
  if(step_output MATCHES "Eigen::|stbi_|sga::model_file::\\(anonymous")
    message(FATAL_ERROR "test_install_consumer: ${shared_library} exports implementation symbols:\n${step_output}")
  endif()
elseif(installed_libraries)
  message(FATAL_ERROR "test_install_consumer: ${BUILD_DIR} is a static build but installed ${installed_libraries}")
endif()

# 2. Configure the consumer against the prefix only, on a "machine without CUDA".
set(prefix_path "${prefix}")
if(DEFINED EXTRA_PREFIX_PATH AND NOT EXTRA_PREFIX_PATH STREQUAL "")
  list(APPEND prefix_path ${EXTRA_PREFIX_PATH})
endif()
string(REPLACE ";" "\\;" prefix_path_argument "${prefix_path}")
run_step(configure ${without_cuda} "${CMAKE_COMMAND}"
  -S "${SOURCE_DIR}/examples/consumer" -B "${consumer_build}"
  ${generator_arguments} ${compiler_arguments} "-DCMAKE_BUILD_TYPE=${build_type}"
  "-DCMAKE_PREFIX_PATH=${prefix_path_argument}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
  # A package that still asked for CUDA would fail here.
  -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON -DCMAKE_DISABLE_FIND_PACKAGE_CUDA=ON
  -DCMAKE_IGNORE_PREFIX_PATH=/usr/local/cuda -DCMAKE_IGNORE_PATH=/usr/local/cuda/lib64)

# The package must come from the prefix, not from the build tree or elsewhere.
file(STRINGS "${consumer_build}/CMakeCache.txt" found_dir REGEX "^skipganomaly_DIR:")
string(REGEX REPLACE "^skipganomaly_DIR:[A-Z]+=" "" found_dir "${found_dir}")
file(REAL_PATH "${prefix}" real_prefix)
file(REAL_PATH "${found_dir}" real_found_dir)
string(FIND "${real_found_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "test_install_consumer: skipganomaly was found in '${found_dir}', not under ${prefix}")
endif()

# 3. Build; nothing CUDA on the link line.
run_step(build ${without_cuda} "${CMAKE_COMMAND}" --build "${consumer_build}" ${config_arguments})
file(GLOB_RECURSE link_files "${consumer_build}/build.ninja" "${consumer_build}/*/link.txt")
foreach(link_file IN LISTS link_files)
  file(READ "${link_file}" link_text)
  if(link_text MATCHES "cudart|cudnn|/usr/local/cuda")
    message(FATAL_ERROR "test_install_consumer: the consumer's link line names CUDA (${link_file})")
  endif()
endforeach()

# 4. Run.
set(app "${consumer_build}/app")
if(NOT EXISTS "${app}" AND DEFINED CONFIG AND EXISTS "${consumer_build}/${CONFIG}/app")
  set(app "${consumer_build}/${CONFIG}/app")
endif()
require_no_cuda_needed("${app}")
run_step(run ${without_cuda} "${app}")
check_consumer_output(run "${step_output}")

# 5. The same program built with pkg-config, without CMake (--static for a static library).
set(pkg_config_static "")
if(NOT library_is_shared)
  set(pkg_config_static --static)
endif()
list(GET pkgconfig_files 0 pkgconfig_file)
get_filename_component(pkgconfig_dir "${pkgconfig_file}" DIRECTORY)
find_program(pkg_config pkg-config)
if(NOT pkg_config)
  message(FATAL_ERROR "test_install_consumer: pkg-config is not installed (scripts/setup.sh installs it)")
endif()
set(with_pkgconfig_path "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${pkgconfig_dir}")
run_step(pkg-config ${with_pkgconfig_path} "${pkg_config}" --cflags skipganomaly)
string(STRIP "${step_output}" pc_cflags)
run_step(pkg-config ${with_pkgconfig_path} "${pkg_config}" ${pkg_config_static} --libs skipganomaly)
string(STRIP "${step_output}" pc_libs)
run_step(pkg-config ${with_pkgconfig_path} "${pkg_config}" --variable=libdir skipganomaly)
string(STRIP "${step_output}" pc_libdir)
message(STATUS "[pkg-config] --cflags: ${pc_cflags}; --libs: ${pc_libs}")
if(pc_libs MATCHES "cudart|cudnn|-lcuda")
  message(FATAL_ERROR "test_install_consumer: pkg-config --libs names CUDA: ${pc_libs}")
endif()
separate_arguments(pc_cflags UNIX_COMMAND "${pc_cflags}")
separate_arguments(pc_libs UNIX_COMMAND "${pc_libs}")
set(pkgconfig_app "${pkgconfig_build}/app")
run_step(pkg-config-build ${without_cuda} "${cxx}" -std=c++20 -O2 ${pc_cflags}
  "${SOURCE_DIR}/examples/consumer/main.cpp" -o "${pkgconfig_app}" ${pc_libs} "-Wl,-rpath,${pc_libdir}")
require_no_cuda_needed("${pkgconfig_app}")
run_step(pkg-config-run ${without_cuda} "${pkgconfig_app}")
check_consumer_output(pkg-config-run "${step_output}")

# 6. The CUDA module, where this install has one, loads into the program built without CUDA:
#    the reason CUDA is unusable is then CUDA's own (no GPU here), not a missing module.
if(cuda_module)
  list(GET cuda_module 0 module_file)
  run_step(run-with-module "${CMAKE_COMMAND}" -E env "SKIPGANOMALY_CUDA_MODULE=${module_file}" "${app}")
  check_consumer_output(run-with-module "${step_output}")
  if(step_output MATCHES "could not be loaded")
    message(FATAL_ERROR "test_install_consumer: ${module_file} did not load:\n${step_output}")
  endif()
endif()

# 7. The installed command-line tool, when the build tree has it.
file(STRINGS "${library_build}/CMakeCache.txt" examples_option REGEX "^SKIPGANOMALY_BUILD_EXAMPLES:BOOL=")
if(examples_option MATCHES "=(ON|TRUE|1|YES)$")
  file(GLOB_RECURSE installed_tool "${prefix}/*/skipganomaly")
  list(FILTER installed_tool EXCLUDE REGEX "/include/|/cmake/")
  if(NOT installed_tool)
    message(FATAL_ERROR "test_install_consumer: the examples were built, but no skipganomaly tool was installed")
  endif()
  list(GET installed_tool 0 tool)
  require_no_cuda_needed("${tool}")
  run_step(tool ${without_cuda} "${tool}" --version)
  message(STATUS "[tool] ${step_output}")
endif()

message(STATUS "test_install_consumer: passed")

# Finds Debian's stb and, where it is version 2.27 (Debian 12), writes a copy of stb_image.h
# with five small fixes, so that hostile images cannot reach the memory-safety bugs our
# fuzzer found in it (docs/reliability.md, "Image files"):
#   1. a JPEG Huffman table declaring more than 256 codes wrote past stbi__huffman::size[257]
#      and values[256];
#   2. JPEG bit readers kept consuming bits after a marker stopped the bit buffer from being
#      refilled, driving code_bits negative (an over-wide shift, then garbage reads);
#   3. the fast AC path did the same;
#   4. a scan using a Huffman table that no DHT defined decoded from uninitialised memory;
#   5. a PNG whose first IDAT chunk is empty called memcpy(NULL, p, 0).
# Each replacement must match exactly once: a header that differs fails the configure step
# instead of going silently unpatched. Other versions are used as they are.
#
# Sets SKIPGANOMALY_STB_INCLUDE_DIRS: the folders image.cpp includes stb from, patched first.

find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
set(_stb_header "${STB_INCLUDE_DIR}/stb_image.h")
file(STRINGS "${_stb_header}" _stb_version_line LIMIT_COUNT 1 REGEX "stb_image - v[0-9.]+")
string(REGEX MATCH "v[0-9.]+" _stb_version "${_stb_version_line}")

if(NOT _stb_version STREQUAL "v2.27")
  message(STATUS "stb_image ${_stb_version} at ${STB_INCLUDE_DIR}: used as it is")
  set(SKIPGANOMALY_STB_INCLUDE_DIRS "${STB_INCLUDE_DIR}")
  return()
endif()

set(_patched_dir "${CMAKE_CURRENT_BINARY_DIR}/patched-stb")
set(_patched_header "${_patched_dir}/stb_image.h")
file(READ "${_stb_header}" _stb)

function(_stb_replace old new)
  string(FIND "${_stb}" "${old}" _first)
  string(FIND "${_stb}" "${old}" _last REVERSE)
  if(_first EQUAL -1 OR NOT _first EQUAL _last)
    message(FATAL_ERROR "stb_image.h 2.27 at ${_stb_header} is not the text the patch expects; "
                        "cannot find exactly one:\n${old}")
  endif()
  string(REPLACE "${old}" "${new}" _stb "${_stb}")
  set(_stb "${_stb}" PARENT_SCOPE)
endfunction()

# 1. At most 256 codes per Huffman table (the JPEG limit: one per 8-bit symbol).
_stb_replace(
  "            L -= 17;\n            if (tc == 0) {"
  "            if (n > 256) return stbi__err(\"bad DHT header\",\"Corrupt JPEG\"); /* skipganomaly */\n            L -= 17;\n            if (tc == 0) {")
# 2. Bit readers: when no more bits can be had, read zeros instead of consuming missing ones.
_stb_replace(
  "   if (j->code_bits < n) stbi__grow_buffer_unsafe(j);\n\n   sgn"
  "   if (j->code_bits < n) stbi__grow_buffer_unsafe(j);\n   if (j->code_bits < n) return 0; /* skipganomaly */\n\n   sgn")
_stb_replace(
  "   if (j->code_bits < n) stbi__grow_buffer_unsafe(j);\n   k = stbi_lrot"
  "   if (j->code_bits < n) stbi__grow_buffer_unsafe(j);\n   if (j->code_bits < n) return 0; /* skipganomaly */\n   k = stbi_lrot")
_stb_replace(
  "   if (j->code_bits < 1) stbi__grow_buffer_unsafe(j);\n   k = j->code_buffer;"
  "   if (j->code_bits < 1) stbi__grow_buffer_unsafe(j);\n   if (j->code_bits < 1) return 0; /* skipganomaly */\n   k = j->code_buffer;")
# 3. The fast AC paths (baseline and progressive) consume a combined code of s bits.
_stb_replace(
  "         s = r & 15; // combined length\n         j->code_buffer <<= s;"
  "         s = r & 15; // combined length\n         if (s > j->code_bits) return stbi__err(\"bad huffman code\",\"Corrupt JPEG\"); /* skipganomaly */\n         j->code_buffer <<= s;")
_stb_replace(
  "            s = r & 15; // combined length\n            j->code_buffer <<= s;"
  "            s = r & 15; // combined length\n            if (s > j->code_bits) return stbi__err(\"bad huffman code\",\"Corrupt JPEG\"); /* skipganomaly */\n            j->code_buffer <<= s;")
# 4. Start the JPEG decoder from zeroed state: a scan may use a Huffman table no DHT defined,
#    and stb then decodes from uninitialised heap memory (valgrind), with results that change
#    with the optimisation level. Zeroed, such a table matches no code and the file is refused.
_stb_replace(
  "   STBI_NOTUSED(ri);\n   j->s = s;"
  "   STBI_NOTUSED(ri);\n   memset(j, 0, sizeof(stbi__jpeg)); /* skipganomaly */\n   j->s = s;")
# 5. Copy nothing from an empty chunk.
_stb_replace(
  "   if (s->img_buffer+n <= s->img_buffer_end) {\n      memcpy(buffer, s->img_buffer, n);"
  "   if (s->img_buffer+n <= s->img_buffer_end) {\n      if (n > 0) memcpy(buffer, s->img_buffer, n); /* skipganomaly */")

string(REPLACE "stb_image - v2.27 -" "stb_image - v2.27 (fixes added by skipganomaly, cmake/SkipganomalyStb.cmake) -"
       _stb "${_stb}")
# Written through configure_file so that an unchanged header keeps its time stamp.
file(WRITE "${_patched_header}.new" "${_stb}")
configure_file("${_patched_header}.new" "${_patched_header}" COPYONLY)
message(STATUS "stb_image v2.27 at ${STB_INCLUDE_DIR}: compiled with fixes (${_patched_header})")
set(SKIPGANOMALY_STB_INCLUDE_DIRS "${_patched_dir}" "${STB_INCLUDE_DIR}")

# Hardening builds (docs/hardening.md). Both are off by default and meant for their own build dir:
#   -DLOCO_SANITIZE=ON  AddressSanitizer + UndefinedBehaviorSanitizer on loco's own code; any UB
#                       is fatal (-fno-sanitize-recover), so a test that hits it fails.
#   -DLOCO_FUZZ=ON      the libFuzzer targets in fuzz/ (clang only); implies LOCO_SANITIZE and adds
#                       libFuzzer's coverage instrumentation to loco's code.
# The flags travel on the INTERFACE target loco_sanitize, which every target of loco's own that
# uses LibTorch links (through loco_torch). LibTorch, gRPC and the SentencePiece shim are not
# instrumented: the shim is loaded into a namespace of its own (src/data/tokenizer.cpp), where
# ASan's runtime is not.
option(LOCO_SANITIZE "Build loco's own code with AddressSanitizer and UBSan" OFF)
option(LOCO_FUZZ "Build the libFuzzer targets in fuzz/ (clang; implies LOCO_SANITIZE)" OFF)

add_library(loco_sanitize INTERFACE)
if(LOCO_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "LOCO_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  set(LOCO_SANITIZE ON CACHE BOOL "" FORCE)
  target_compile_options(loco_sanitize INTERFACE -fsanitize=fuzzer-no-link)
endif()
if(LOCO_SANITIZE)
  if(CMAKE_VERSION VERSION_LESS 3.22)
    message(FATAL_ERROR "LOCO_SANITIZE needs CMake >= 3.22 (tests/CMakeLists.txt uses TEST_FILTER)")
  endif()
  set(_loco_sanitizers -fsanitize=address,undefined -fno-sanitize-recover=undefined)
  target_compile_options(loco_sanitize INTERFACE ${_loco_sanitizers} -fno-omit-frame-pointer -g1)
  target_link_options(loco_sanitize INTERFACE ${_loco_sanitizers})
  message(STATUS "loco: AddressSanitizer + UBSan on loco's own code")
endif()

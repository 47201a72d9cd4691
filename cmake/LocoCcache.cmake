# Use ccache when it is installed. The sloppiness settings let ccache cache
# translation units that use a precompiled header; the base directory makes paths inside the
# clone relative, so another clone of the same commit (a CI checkout) hits the same cache.
find_program(LOCO_CCACHE ccache)
if(LOCO_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros"
      "CCACHE_BASEDIR=${PROJECT_SOURCE_DIR}"
      ${LOCO_CCACHE})
  message(STATUS "loco: using ccache (${LOCO_CCACHE})")
endif()

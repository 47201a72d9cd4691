# loco_torch_headers_last(target): for a LibTorch 2.x (a pip torch, the LibTorch zip). Such a
# LibTorch bundles headers of its own fmt and protobuf (and lacks Gloo's), of other versions than
# the ones spdlog and gRPC were built with; searched first, as -isystem, they break spdlog and the
# generated protobuf code. This searches torch's folders after all others (-idirafter) and takes
# them off torch's imported targets, which carry them too. Debian's 1.13 lives in /usr/include
# with everything else and needs none of it.
function(loco_torch_headers_last target)
  set(_loco_torch_dirs)
  foreach(dir IN LISTS TORCH_INCLUDE_DIRS)
    file(REAL_PATH "${dir}" _real)
    list(APPEND _loco_torch_dirs "${_real}")
  endforeach()
  get_property(_loco_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _loco_imported)
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _inc)
      continue()
    endif()
    set(_keep)
    foreach(dir IN LISTS _inc)
      if(dir MATCHES "^\\$<")  # a generator expression: not a folder to compare
        list(APPEND _keep "${dir}")
        continue()
      endif()
      file(REAL_PATH "${dir}" _real)
      if(NOT _real IN_LIST _loco_torch_dirs)
        list(APPEND _keep "${dir}")
      endif()
    endforeach()
    set_property(TARGET ${_t} PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_keep}")
  endforeach()
  foreach(dir IN LISTS TORCH_INCLUDE_DIRS)
    target_compile_options(${target} INTERFACE "SHELL:-idirafter ${dir}")
  endforeach()
endfunction()

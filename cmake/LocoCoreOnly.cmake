# -DLOCO_CORE_ONLY=ON: the model and the optimizers against the found LibTorch alone, and
# loco_gpu_check (bench/gpu_check.cpp), for a GPU machine that has a CUDA LibTorch (a pip torch's
# share/cmake/Torch, say) but none of loco's other dependencies. Included by the top-level
# CMakeLists.txt after find_package(Torch); it defines no other target. bench/gpu_check.sh runs
# it, docs/gpu.md records what it saw.
message(STATUS "loco (core only): LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# The sources need loco/config.h's structs only (header-only), not config.cpp and yaml-cpp.
add_library(loco_core STATIC src/model/gpt.cpp src/model/kernels.cpp src/model/precision.cpp
            src/optim/optimizer.cpp
            src/optim/schedule.cpp)
target_include_directories(loco_core PUBLIC ${PROJECT_SOURCE_DIR}/include)
target_include_directories(loco_core SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
target_link_libraries(loco_core PUBLIC ${TORCH_LIBRARIES})
separate_arguments(_loco_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(loco_core PUBLIC ${_loco_torch_flags})
target_compile_features(loco_core PUBLIC cxx_std_17)
loco_warnings(loco_core)

add_executable(loco_gpu_check bench/gpu_check.cpp)
target_link_libraries(loco_gpu_check PRIVATE loco_core)
loco_warnings(loco_gpu_check)
# A CUDA LibTorch: the check reads the caching allocator's peak memory (c10_cuda, CUDA headers).
if(C10_CUDA_LIBRARY)
  target_compile_definitions(loco_gpu_check PRIVATE LOCO_WITH_CUDA=1)
  if(CUDAToolkit_INCLUDE_DIRS)
    target_include_directories(loco_gpu_check SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  endif()
  message(STATUS "loco (core only): CUDA LibTorch (${C10_CUDA_LIBRARY})")
else()
  message(STATUS "loco (core only): CPU-only LibTorch; loco_gpu_check will run its CPU part")
endif()

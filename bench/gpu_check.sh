#!/usr/bin/env bash
# Builds loco's core (model + optimizers) against the pip torch of a GPU machine and runs
# loco_gpu_check (bench/gpu_check.cpp). Needs python3 with a CUDA torch, cmake, ninja, nvcc; none
# of loco's other dependencies. docs/gpu.md records what it saw.
#   bash bench/gpu_check.sh        # logs under $OUT (the device tool's) or bench/results/gpu_check
# If CMake's configure or build fails, it builds the same sources with g++ directly, so that
# the log still says whether they compile against this LibTorch.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_check}
BUILD=${BUILD:-build-gpu}
mkdir -p "$OUT" "$BUILD"
PY=${PYTHON:-python3}
JOBS=$(nproc)

main() {

echo "== environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "cxx11abi", torch.compiled_with_cxx11_abi(), "gpu", torch.cuda.is_available())'
cmake --version | head -1; echo "ninja $(ninja --version)"; g++ --version | head -1
TORCH_PKG=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')
TORCH_DIR=$TORCH_PKG/share/cmake/Torch
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
CUDA_ROOT=$(dirname "$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")")
echo "Torch_DIR=$TORCH_DIR nvcc=$NVCC"; [ -n "$NVCC" ] && "$NVCC" --version | tail -1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # else torch's CMake probes the GPU
export LD_LIBRARY_PATH=$TORCH_PKG/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# A stub cmake/LocoProto.cmake (protobuf, gRPC), found first: no longer needed now that the
# LOCO_CORE_ONLY hook returns before CMakeLists.txt includes it, and harmless.
STUB=$(mktemp -d)
printf 'function(loco_proto_library)\nendfunction()\n' > "$STUB/LocoProto.cmake"

echo "== configure (CMake, -DLOCO_CORE_ONLY=ON)"
BIN=
t0=$(date +%s)
if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCO_CORE_ONLY=ON \
     -DTorch_DIR="$TORCH_DIR" -DCMAKE_CUDA_COMPILER="$NVCC" -DCUDAToolkit_ROOT="$CUDA_ROOT" \
     -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_MODULE_PATH="$STUB" > "$OUT/configure.log" 2>&1; then
  grep -E 'loco|Caffe2|CUDA|Torch|Warning' "$OUT/configure.log" | head -30
  echo "== build (ninja -j$JOBS), configure took $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  if ninja -C "$BUILD" -j"$JOBS" loco_gpu_check > "$OUT/build.log" 2>&1; then
    BIN=$BUILD/loco_gpu_check
    echo "CMake build OK in $(( $(date +%s) - t0 )) s"
  else
    echo "CMake build FAILED:"; grep -E -A3 'error|Error' "$OUT/build.log" | head -60
  fi
else
  echo "CMake configure FAILED:"; tail -40 "$OUT/configure.log"
fi

if [ -z "$BIN" ]; then
  echo "== fallback: g++ directly against $TORCH_PKG"
  ABI=$($PY -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
  FLAGS="-O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=$ABI -DLOCO_WITH_CUDA=1 -Iinclude
         -isystem $TORCH_PKG/include -isystem $TORCH_PKG/include/torch/csrc/api/include
         -isystem $CUDA_ROOT/include"
  mkdir -p "$BUILD/direct"; ok=1
  for src in src/model/gpt.cpp src/model/kernels.cpp src/optim/optimizer.cpp \
             src/optim/schedule.cpp bench/gpu_check.cpp; do
    g++ $FLAGS -c "$src" -o "$BUILD/direct/$(basename "$src").o" &
  done
  for job in $(jobs -p); do wait "$job" || ok=0; done
  if [ $ok = 1 ] && g++ "$BUILD"/direct/*.o -o "$BUILD/direct/loco_gpu_check" -L"$TORCH_PKG/lib" \
       -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed -ltorch -ltorch_cpu -lc10 \
       -Wl,-rpath,"$TORCH_PKG/lib"; then
    BIN=$BUILD/direct/loco_gpu_check
    echo "direct build OK"
  else
    echo "direct build FAILED"
  fi
fi

if [ -n "$BIN" ]; then
  echo "== run $BIN"
  timeout -s INT 300 "$BIN" | tee "$OUT/run.log"
  echo "exit status ${PIPESTATUS[0]}"
  grep '^{' "$OUT/run.log" > "$OUT/gpu_check.jsonl" || true
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv || true
fi
rm -rf "$STUB"
}

main 2>&1 | tee "$OUT/gpu_check.log"

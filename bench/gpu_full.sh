#!/usr/bin/env bash
# The whole of loco (gRPC coordinator, c10d DDP over NCCL, codecs, tests) built against a CUDA
# LibTorch 2.x (a pip torch's share/cmake/Torch) and run on its GPU: the check docs/gpu.md records.
#
#   bash bench/gpu_full.sh                  # logs under $OUT (the device tool's) or bench/results/gpu_full/
#   bash bench/gpu_full.sh --download-debs  # on a Debian 12 machine: fill .gpu-deps/ (21 MB)
#
# loco's other dependencies come from the system (apt-get install the packages scripts/common.sh
# names), or, on a machine that cannot fetch, from Debian 12 .deb files in $LOCO_DEPS_DEBS
# (default .gpu-deps/, made by --download-debs), unpacked into $LOCO_DEPS_PREFIX and found through
# CMAKE_PREFIX_PATH and pkg-config's sysroot. Env: TESTS (a ctest -R regex), NO_RUNS=1 (tests only).
# Needs a prepared corpus in data/nlp-corpus (the quickstart makes it) for the training runs.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_full}
BUILD=${BUILD:-build-cuda}
DEBS=${LOCO_DEPS_DEBS:-.gpu-deps}
PREFIX=${LOCO_DEPS_PREFIX:-/opt/loco-deps}
PY=${PYTHON:-python3}
JOBS=$(nproc)
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)

stamp() { echo "== $* ($(date +%T))"; }

# The -dev packages loco builds with and the libraries they need that a CUDA image may lack
# (libc, libstdc++ and OpenSSL's libssl3 come with any glibc >= 2.36 system; libssl3 is taken
# anyway, for libssl-dev's link). No libgloo0: a LibTorch 2.x has Gloo inside.
DEB_PACKAGES=(
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 protobuf-compiler-grpc
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2 libssl-dev libssl3
  zlib1g-dev zlib1g libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libyaml-cpp-dev libyaml-cpp0.7
  nlohmann-json3-dev libcli11-dev libsentencepiece-dev libsentencepiece0 libgloo-dev
  libgtest-dev libgmock-dev pkgconf pkgconf-bin libpkgconf3
)
if [[ ${1:-} == --download-debs ]]; then
  mkdir -p "$DEBS" && cd "$DEBS" && apt-get download "${DEB_PACKAGES[@]}"
  echo "$(ls ./*.deb | wc -l) packages in $DEBS ($(du -sh . | cut -f1))"
  exit
fi

unpack_debs() {
  stamp "unpacking $(ls "$DEBS"/*.deb | wc -l) Debian packages into $PREFIX"
  mkdir -p "$PREFIX"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX"; done
  # Absolute symlinks (libz.so -> /lib/...) would leave the prefix: point them into it.
  find "$PREFIX" -type l | while read -r link; do
    target=$(readlink "$link")
    [[ $target == /* ]] && ln -sfn "$PREFIX$target" "$link"
  done
  local arch=x86_64-linux-gnu
  export PATH=$PREFIX/usr/bin:$PATH
  export LD_LIBRARY_PATH=$PREFIX/usr/lib/$arch:$PREFIX/lib/$arch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG_SYSROOT_DIR=$PREFIX
  export PKG_CONFIG_LIBDIR=$PREFIX/usr/lib/$arch/pkgconfig:$PREFIX/usr/share/pkgconfig
  CMAKE_DEPS=(-DCMAKE_PREFIX_PATH="$PREFIX/usr" -DPKG_CONFIG_EXECUTABLE="$PREFIX/usr/bin/pkgconf")
}

main() {
  stamp "environment"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "nccl", torch.cuda.nccl.version(), "gpu", torch.cuda.is_available())'
  cmake --version | head -1; echo "ninja $(ninja --version)"; g++ --version | head -1
  ldd --version | head -1
  TORCH_PKG=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')
  echo "torch include: gloo/ $([ -d "$TORCH_PKG/include/gloo" ] && echo yes || echo no)," \
    "google/protobuf/ $([ -d "$TORCH_PKG/include/google/protobuf" ] && echo yes || echo no)"
  NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  CUDA_ROOT=$(dirname "$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")")
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # else torch's CMake probes the GPU
  export LD_LIBRARY_PATH=$TORCH_PKG/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  CMAKE_DEPS=()
  if compgen -G "$DEBS/*.deb" >/dev/null; then unpack_debs; fi

  stamp "configure"
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DTorch_DIR="$TORCH_PKG/share/cmake/Torch" -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DCUDAToolkit_ROOT="$CUDA_ROOT" -DCMAKE_CUDA_ARCHITECTURES=90 -DLOCO_PYTHON="$(command -v $PY)" \
    "${CMAKE_DEPS[@]}" > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; return 1; }
  grep -E '^-- loco|Could NOT|Warning' "$OUT/configure.log" | head -20

  stamp "build (ninja -j$JOBS -k 0)"
  local t0=$SECONDS
  ninja -C "$BUILD" -j"$JOBS" -k 0 > "$OUT/build.log" 2>&1
  local rc=$?
  echo "build exit $rc in $((SECONDS - t0)) s; warnings: $(grep -c 'warning:' "$OUT/build.log")"
  grep -E -B2 -A6 'error:' "$OUT/build.log" | head -80
  [[ -x $BUILD/loco ]] || return 1
  local loco=$BUILD/loco

  stamp "tests on this LibTorch (ctest -j12; CUDA cases run where a suite has them)"
  (cd "$BUILD" && timeout 150 ctest -j12 --timeout 120 --output-on-failure -R "${TESTS:-.}" > "$OUT/ctest.log" 2>&1)
  grep -E 'tests passed|Failed|\*\*\*|Not Run|Timeout' "$OUT/ctest.log" | head -40
  grep -h -E 'Gpu[A-Za-z]* \.' "$OUT/ctest.log" | head -5  # the cases that need a GPU

  [[ ${NO_RUNS:-0} = 1 ]] && return 0
  [[ -f data/nlp-corpus/val.bin ]] || { echo "no data/nlp-corpus: training runs skipped"; return 0; }
  local common=(--set train.device=cuda --set train.checkpoint_every=0 --set train.log_every=50)
  rm -rf runs/gpu
  stamp "loco train on CUDA: tiny model, 300 steps"
  timeout 120 "$loco" train --config configs/tiny.yaml --set run.dir=runs/gpu/single \
    --set train.max_steps=300 --set train.eval_every=100 "${common[@]}" 2>&1 | tail -8
  stamp "DDP over NCCL (one rank: ProcessGroupNCCL and its all-reduce), 100 steps"
  timeout 120 "$loco" launch --config configs/tiny.yaml --set run.dir=runs/gpu/ddp \
    --set sync.mode=ddp --set sync.workers=1 --set train.max_steps=100 --set train.eval_every=50 \
    "${common[@]}" 2>&1 | tail -8
  stamp "DiLoCo + DCT on CUDA: 2 workers on the one GPU, H=25, 100 steps"
  timeout 150 "$loco" launch --config configs/diloco-dct-tiny.yaml --set run.dir=runs/gpu/dct \
    --set sync.workers=2 --set sync.inner_steps=25 --set train.max_steps=100 \
    --set train.eval_every=0 "${common[@]}" 2>&1 | tail -8
  for f in $(find runs/gpu -name summary.json); do echo "$f: $(cat "$f")"; done > "$OUT/summaries.txt"
  head -c 3000 "$OUT/summaries.txt"; echo

  stamp "codec encode+decode of the tiny model's tensors: CPU (1 thread) vs CUDA"
  for dev in cpu cuda; do
    timeout 60 "$BUILD/bench/codec_bench" --repeats 20 --threads 1 --device $dev
  done
}

main 2>&1 | tee "$OUT/gpu_full.log"

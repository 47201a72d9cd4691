# Shared by scripts/quickstart.sh and scripts/test.sh: say what is happening, install what is
# missing from Debian's packages, and build loco. Sourced, not run.

say() { printf '\n==> %s\n' "$*"; }

# Runs a command as root (directly, or through sudo when there is one).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: installing packages needs root; run as root or install sudo" >&2; exit 1
  fi
}

# Everything loco builds, tests and runs with, from Debian 12's repositories.
LOCO_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libtorch-dev libgloo-dev libopenblas0-pthread
  libspdlog-dev libcli11-dev libyaml-cpp-dev libsentencepiece-dev nlohmann-json3-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libcpp-httplib-dev
  googletest libgtest-dev libbenchmark-dev
  python3 python3-torch python3-numpy python3-yaml
  gnuplot-nox openssl iproute2
  clang libclang-rt-14-dev
)

# install_packages [extra...]: apt-get install whatever of LOCO_PACKAGES (and extras) is missing.
install_packages() {
  local wanted=("${LOCO_PACKAGES[@]}" "$@") missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "system packages: all ${#wanted[@]} present"
    return
  fi
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# Parallel build jobs: $LOCO_JOBS, or one per core.
build_jobs() { echo "${LOCO_JOBS:-$(nproc 2>/dev/null || echo 2)}"; }

# build_loco [TARGET...]: configure (once) and build into ./build with ccache and precompiled
# headers; every target (tests included) unless targets are named.
build_loco() {
  local jobs targets=()
  jobs=$(build_jobs)
  if (( $# )); then targets=(--target "$@"); fi
  say "building ${*:-loco and its tests} (build/, ${jobs} jobs; ccache makes rebuilds fast)"
  if [[ ! -f build/build.ninja ]]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build build -j "$jobs" "${targets[@]}"
}

# build_hardening: the two hardening builds of docs/hardening.md, each configured once.
#   build-asan/  g++, AddressSanitizer + UBSan on loco's code: the unit-test suites only
#   build-fuzz/  clang++ with libFuzzer: fuzz_update and its seed writer, and the parts they link
build_hardening() {
  local jobs
  jobs=$(build_jobs)
  say "building the sanitizer build (build-asan/: ASan + UBSan, unit tests; ${jobs} jobs)"
  if [[ ! -f build-asan/build.ninja ]]; then
    cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCO_SANITIZE=ON \
      -DLOCO_BUILD_BENCH=OFF >/dev/null
  fi
  cmake --build build-asan -j "$jobs"
  say "building the fuzz target (build-fuzz/: clang++, libFuzzer + ASan + UBSan)"
  if [[ ! -f build-fuzz/build.ninja ]]; then
    cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
      -DLOCO_FUZZ=ON -DLOCO_BUILD_TESTS=OFF -DLOCO_BUILD_BENCH=OFF >/dev/null
  fi
  cmake --build build-fuzz -j "$jobs" --target fuzz_update make_seeds
}

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
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  googletest libgtest-dev libbenchmark-dev
  python3 python3-torch python3-numpy python3-yaml
  gnuplot-nox openssl iproute2
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

# build_loco: configure (once) and build into ./build with ccache and precompiled headers.
build_loco() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  say "building loco (build/, ${jobs} jobs; ccache makes rebuilds fast)"
  if [[ ! -f build/build.ninja ]]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build build -j "$jobs"
}

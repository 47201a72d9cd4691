// Autocast, TF32 and the bf16 support check (see include/loco/precision.h). The only file that
// includes ATen/autocast_mode.h: `#if LOCO_AUTOCAST_BY_DEVICE` marks where LibTorch 1.13
// (one function per device type) and 2.4+ (functions taking the device type) differ.
#include "loco/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "loco/config.h"  // ConfigError

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define LOCO_AUTOCAST_BY_DEVICE 1
#else
#define LOCO_AUTOCAST_BY_DEVICE 0
#endif

namespace loco {
namespace {

bool autocast_enabled(c10::DeviceType type) {
#if LOCO_AUTOCAST_BY_DEVICE
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled()
                                       : at::autocast::is_cpu_enabled();
#endif
}

void set_autocast_enabled(c10::DeviceType type, bool enabled) {
#if LOCO_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == c10::DeviceType::CUDA)
    at::autocast::set_enabled(enabled);
  else
    at::autocast::set_cpu_enabled(enabled);
#endif
}

c10::ScalarType get_autocast_dtype(c10::DeviceType type) {
#if LOCO_AUTOCAST_BY_DEVICE
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                       : at::autocast::get_autocast_cpu_dtype();
#endif
}

void set_autocast_dtype(c10::DeviceType type, c10::ScalarType dtype) {
#if LOCO_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CUDA)
    at::autocast::set_autocast_gpu_dtype(dtype);
  else
    at::autocast::set_autocast_cpu_dtype(dtype);
#endif
}

// Autocast covers CPU and CUDA; any other device type trains in fp32.
c10::DeviceType autocast_type(const torch::Device& device) {
  return device.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}

std::string read_cpuinfo() {
  const char* hook = std::getenv("LOCO_CPUINFO");
  std::ifstream in(hook ? hook : "/proc/cpuinfo");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether a 64x64 bf16 matmul runs on `device` and agrees with fp32 to bf16's precision.
std::string bf16_matmul_problem(const torch::Device& device) {
  try {
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(7);
    auto a = torch::randn({64, 64}, gen).to(device), b = torch::randn({64, 64}, gen).to(device);
    auto exact = torch::mm(a, b);
    auto low = torch::mm(a.to(torch::kBFloat16), b.to(torch::kBFloat16)).to(torch::kFloat32);
    double err = (low - exact).abs().max().item<double>();
    double scale = exact.abs().max().item<double>();
    if (!(err <= 0.05 * scale)) return "a bf16 matmul is off by " + std::to_string(err);
  } catch (const std::exception& e) {
    std::string what = e.what();
    return "a bf16 matmul failed: " + what.substr(0, what.find('\n'));
  }
  return "";
}

}  // namespace

AutocastGuard::AutocastGuard(const torch::Device& device, bool enabled)
    : active_(enabled), type_(autocast_type(device)) {
  if (!active_) return;
  previous_enabled_ = autocast_enabled(type_);
  previous_dtype_ = get_autocast_dtype(type_);
  set_autocast_enabled(type_, true);
  set_autocast_dtype(type_, torch::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast_enabled(type_, previous_enabled_);
  set_autocast_dtype(type_, previous_dtype_);
}

std::optional<c10::ScalarType> autocast_dtype(const torch::Device& device) {
  c10::DeviceType type = autocast_type(device);
  if (!autocast_enabled(type)) return std::nullopt;
  return get_autocast_dtype(type);
}

void set_tf32(bool allow) {
  at::globalContext().setAllowTF32CuBLAS(allow);
  at::globalContext().setAllowTF32CuDNN(allow);
}

bool cpuinfo_has_bf16(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    if (key.rfind("flags", 0) != 0 && key.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16" || w == "bf16") return true;
  }
  return false;
}

void check_precision(const std::string& precision, const torch::Device& device) {
  if (precision == "fp32") return;
  if (precision != "bf16")
    throw ConfigError("train.precision: '" + precision + "' is not one of fp32 | bf16");
  if (device.is_cpu() && !cpuinfo_has_bf16(read_cpuinfo()))
    throw ConfigError(
        "train.precision: bf16 but this CPU has no native bf16 (no avx512_bf16, amx_bf16 or "
        "bf16 in /proc/cpuinfo), where bf16 matmuls are emulated and slower than fp32; set "
        "train.precision=fp32");
  std::string problem = bf16_matmul_problem(device);
  if (!problem.empty())
    throw ConfigError("train.precision: bf16 but on " + device.str() + " " + problem +
                      " (CUDA needs compute capability 8.0+); set train.precision=fp32");
}

}  // namespace loco

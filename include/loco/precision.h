// Mixed precision (train.precision, train.tf32): autocast scopes, the bf16 support check, TF32.
//
// bf16 training is autocast around the forward pass only: matmuls and attention run in
// bfloat16 on CPU (oneDNN; AVX512-BF16 / AMX) or CUDA, while the parameters stay fp32 and so
// do their gradients (autocast's casts have fp32 gradients), the optimizer state, DiLoCo's
// pseudo-gradients and outer state, and checkpoints. The backward follows the forward's dtypes
// by itself; it runs outside the scope. No loss scaling: bf16 keeps fp32's 8-bit exponent, so
// gradients that fit fp32 do not underflow (fp16's 5-bit exponent is why fp16 needs one).
//
// LibTorch 1.13 and 2.x spell autocast differently (1.13: is_cpu_enabled / set_enabled for
// CUDA; 2.4+: is_autocast_enabled(device_type)); src/model/precision.cpp is the only file that
// includes ATen/autocast_mode.h, and its `#if` on TORCH_VERSION marks the difference.
#pragma once

#include <torch/types.h>

#include <optional>
#include <string>

namespace loco {

// Autocast to bfloat16 on `device`'s type for the guard's lifetime when `enabled` (else
// nothing). Restores the previous state; the outermost guard drops autocast's cache of cast
// weights, so weights changed by an optimizer step are cast afresh in the next scope.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

// The dtype autocast gives matmuls on `device`'s type right now; nullopt when it is off.
// (Hand-written autograd functions call it to compute like the ops around them.)
std::optional<c10::ScalarType> autocast_dtype(const torch::Device& device);

// train.tf32: whether CUDA fp32 matmuls (cuBLAS, cuDNN) may use TF32. Process-wide; callers
// call it for a CUDA device only (it means nothing on CPU, and newer LibTorch warns about the
// legacy TF32 flags).
void set_tf32(bool allow);

// True when /proc/cpuinfo-style text lists a native bf16 dot product: avx512_bf16 or amx_bf16
// (x86), bf16 (aarch64's Features). Without one, bf16 matmuls are emulated and slower than fp32.
bool cpuinfo_has_bf16(const std::string& cpuinfo_text);

// Throws ConfigError (one line naming train.precision) when `precision` ("fp32" | "bf16")
// cannot run on `device`: an unknown value; bf16 on a CPU without native bf16 (read from
// /proc/cpuinfo, or the file LOCO_CPUINFO names: a test hook); bf16 on a CUDA device where a
// small bf16 matmul fails or is wrong (before Ampere). Costs one 64x64 matmul; call before work.
void check_precision(const std::string& precision, const torch::Device& device);

}  // namespace loco

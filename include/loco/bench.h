// `loco bench train`: training throughput of a config on random tokens, with MFU measured
// against the matmul peak of the same process and device.
#pragma once

#include <cstdint>

#include "loco/config.h"

namespace loco {

struct BenchResult {
  double tokens_per_s = 0;
  double ms_per_step = 0;
  double peak_mem_mb = 0;  // peak resident set (CPU) or peak allocated (CUDA)
  double flops_per_token = 0;
  double achieved_gflops = 0;
  double matmul_peak_gflops = 0;  // best of square fp32 matmuls on the same device
  double mfu = 0;                 // achieved / matmul peak
  int64_t params = 0;
};

// Runs `warmup` untimed then `steps` timed optimizer steps of the config's model, batch and
// optimizer on random tokens (no data files needed).
BenchResult bench_train(const Config& config, int64_t steps, int64_t warmup);

// FLOP/s of large fp32 matmuls on `device` (the denominator of MFU).
double matmul_peak_gflops(const std::string& device);

}  // namespace loco

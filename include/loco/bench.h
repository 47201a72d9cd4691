// `loco bench train`: training throughput of a config on random tokens, with MFU measured
// against the matmul peak of the same process, device and precision (train.precision: a bf16
// run is measured against bf16 matmuls, an fp32 run against fp32 ones).
#pragma once

#include <cstdint>
#include <string>

#include "loco/config.h"

namespace loco {

struct BenchResult {
  double tokens_per_s = 0;
  double ms_per_step = 0;
  double peak_mem_mb = 0;  // peak resident set (CPU) or peak allocated (CUDA)
  double flops_per_token = 0;
  double achieved_gflops = 0;
  double matmul_peak_gflops = 0;  // best of square matmuls on the same device, in `precision`
  double mfu = 0;                 // achieved / matmul peak
  int64_t params = 0;
  std::string precision;  // train.precision of the run: fp32 | bf16
};

// Runs `warmup` untimed then `steps` timed optimizer steps of the config's model, batch and
// optimizer on random tokens (no data files needed).
BenchResult bench_train(const Config& config, int64_t steps, int64_t warmup);

// GFLOP/s of large square matmuls on `device` in `precision` (fp32 | bf16): the denominator of
// MFU. n = 1024 on CPU, 8192 on CUDA; best of 3 timings.
double matmul_peak_gflops(const std::string& device, const std::string& precision = "fp32");

}  // namespace loco

// `loco bench train`: training throughput of a config on random tokens, with MFU measured
// against the matmul peak of the same process, device and precision (train.precision: a bf16
// run is measured against bf16 matmuls, an fp32 run against fp32 ones). `loco bench
// coordinator`: the coordinator's round time, throughput and memory under many simulated workers.
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

// `loco bench coordinator`: a real coordinator process on loopback (the `loco coordinator` of
// `loco_binary`, sync.mode diloco, evaluation off, its run in DIR/coordinator and its log in
// DIR/coordinator.log) and `workers` simulated workers, client threads of this process that push a
// random pseudo-gradient with the workers' own client and pull the new parameters, `rounds`
// times. The model is a GPT of about `params` parameters (nanochat's proportions: 561M is
// configs/d20.yaml's shape, 5M configs/tiny.yaml's). Prints per round the time until the round
// closed, the bytes up and down, the coordinator's GB/s of fp32 pseudo-gradients, its RSS and
// peak RSS; then a summary and one JSON line. Refuses (ConfigError, before any work) when the
// coordinator's budget plus the bench's exceeds the machine's available memory.
struct CoordBenchOptions {
  int64_t params = 5'000'000;
  int workers = 4;
  int rounds = 3;
  std::string codec = "none";  // sync.codec.type of the run
  std::string dir = "runs/bench-coordinator";
  int port = 0;     // 0: a free loopback port
  int threads = 0;  // the coordinator's train.threads (0: LibTorch's default)
};
int bench_coordinator(const CoordBenchOptions& options, const std::string& loco_binary);

// Bytes: the coordinator's budget (4 x the fp32 model + 512 MB, docs/performance.md), the bench
// process's own, and /proc/meminfo's MemAvailable (-1: unknown).
struct CoordBenchEstimate {
  int64_t coordinator_bytes = 0, bench_bytes = 0, available_bytes = -1;
};
CoordBenchEstimate estimate_coordinator_bench(int64_t params, int64_t workers);

}  // namespace loco

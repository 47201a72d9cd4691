// `loco bench train`: throughput, peak memory and MFU (see include/loco/bench.h).
#include "loco/bench.h"

#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>

#include "loco/model.h"
#include "loco/optim.h"
#include "loco/precision.h"
#include "loco/trainer.h"

namespace loco {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}

double peak_rss_mb() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

double matmul_peak_gflops(const std::string& device_name, const std::string& precision) {
  torch::Device device = resolve_device(device_name);
  torch::NoGradGuard no_grad;
  const int64_t n = device.is_cuda() ? 8192 : 1024;
  auto options = torch::TensorOptions().device(device).dtype(precision == "bf16" ? torch::kBFloat16
                                                                                 : torch::kFloat32);
  auto a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  auto c = torch::mm(a, b);
  synchronize(device);
  double best = 0;
  for (int trial = 0; trial < 3; ++trial) {
    const int reps = device.is_cuda() ? 20 : 4;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) torch::mm_out(c, a, b);
    synchronize(device);
    best = std::max(best, 2.0 * n * n * n * reps / seconds_since(t0) / 1e9);
  }
  return best;
}

BenchResult bench_train(const Config& config, int64_t steps, int64_t warmup) {
  validate(config);
  torch::Device device = resolve_device(config.train.device);
  if (config.train.threads > 0) torch::set_num_threads(int(config.train.threads));
  check_precision(config.train.precision, device);
  if (device.is_cuda()) set_tf32(config.train.tf32);
  const bool bf16 = config.train.precision == "bf16";
  const auto& m = config.model;
  GPT model(m);
  model->init_weights(config.run.seed);
  model->to(device);
  FlatParams params(*model);
  auto optimizer = make_optimizer(config.train.optimizer, params);
  auto gen = at::detail::createCPUGenerator(uint64_t(config.run.seed));
  auto tokens =
      torch::randint(m.vocab_size, {config.train.batch_size, m.seq_len + 1}, gen, torch::kInt64)
          .to(device);
  auto input = tokens.narrow(1, 0, m.seq_len), target = tokens.narrow(1, 1, m.seq_len);

  auto one_step = [&] {
    params.zero_grad();
    for (int64_t i = 0; i < config.train.grad_accum; ++i) {
      torch::Tensor loss;
      {
        AutocastGuard autocast(device, bf16);
        loss = model->loss(input, target);
      }
      (loss / double(config.train.grad_accum)).backward();
    }
    params.clip_grad_norm(config.train.optimizer.grad_clip);
    optimizer->step(1.0);
  };
  for (int64_t i = 0; i < warmup; ++i) one_step();
  synchronize(device);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) one_step();
  synchronize(device);
  double elapsed = seconds_since(t0);

  BenchResult r;
  double tokens_per_step = double(config.train.batch_size * config.train.grad_accum * m.seq_len);
  r.ms_per_step = elapsed / double(steps) * 1e3;
  r.tokens_per_s = tokens_per_step * double(steps) / elapsed;
  r.flops_per_token = model->flops_per_token();
  r.achieved_gflops = r.tokens_per_s * r.flops_per_token / 1e9;
  r.precision = config.train.precision;
  r.matmul_peak_gflops = matmul_peak_gflops(config.train.device, config.train.precision);
  r.mfu = r.achieved_gflops / r.matmul_peak_gflops;
  r.peak_mem_mb = device.is_cuda() ? 0.0 : peak_rss_mb();
  r.params = model->num_params();
  return r;
}

}  // namespace loco

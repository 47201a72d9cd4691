// loco_gpu_check: the model and optimizers on CUDA, against any LibTorch (1.13 or 2.x).
//
// 1. The tiny model (same weights, same batch) on CPU and on CUDA, float32, TF32 off: one
//    forward/backward, the loss, logits and flat gradients compared, then one Muon step.
//    Also the attention kernel against plain masked softmax on each device.
// 2. The matmul ceiling of this GPU (fp32, TF32, bf16; 8192³), measured in the same process.
// 3. Training steps on CUDA: tiny model with AdamW and Muon at batch 8 and 32, then the
//    d20-shaped model with Muon at batch 8 (fp32, fp32 with TF32, bf16 weights): ms/step,
//    tokens/s, MFU against the measured ceiling, peak memory.
// One JSON line per measurement on stdout ({"check": ...}, check_output.h), then a short summary.
// Without a CUDA device it runs the CPU half of 1, says "no CUDA device" and exits 0. Built only
// with -DLOCO_CORE_ONLY=ON (cmake/LocoCoreOnly.cmake); run on a GPU machine by bench/gpu_check.sh.
#include <torch/torch.h>
#include <torch/version.h>
#ifndef LOCO_WITH_CUDA
#define LOCO_WITH_CUDA 0  // set by cmake/LocoCoreOnly.cmake for a CUDA LibTorch
#endif
#if LOCO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "check_output.h"
#include "loco/model.h"
#include "loco/optim.h"

namespace {

using loco::FlatParams;
using loco::GPT;
using loco::ModelConfig;
using Clock = std::chrono::steady_clock;

using loco::bench::emit;
using loco::bench::fmt;
using loco::bench::g_summary;
using loco::bench::num;
using loco::bench::str;

const char* kAttention =
#if TORCH_VERSION_MAJOR >= 2
    "at::scaled_dot_product_attention";
#else
    "baddbmm+softmax+bmm (LibTorch 1.x path)";
#endif

// The defaults: 4 layers, 4 heads, width 256, seq 256, vocab 4096.
ModelConfig tiny_config() {
  return ModelConfig{};
}
ModelConfig d20_config() {
  ModelConfig c;
  c.n_layer = 20;
  c.n_head = 10;
  c.n_embd = 1280;
  c.seq_len = 2048;
  c.vocab_size = 65536;
  return c;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

// Random tokens [B, T + 1] from a seeded CPU generator: (inputs, targets) on `device`.
std::pair<torch::Tensor, torch::Tensor> make_batch(const ModelConfig& c, int64_t B, int64_t seed,
                                                   const torch::Device& device) {
  torch::manual_seed(seed);
  auto tokens = torch::randint(0, c.vocab_size, {B, c.seq_len + 1}, torch::kInt64).to(device);
  return {tokens.narrow(1, 0, c.seq_len), tokens.narrow(1, 1, c.seq_len)};
}

void set_tf32(bool on) {
  at::globalContext().setAllowTF32CuBLAS(on);
  at::globalContext().setAllowTF32CuDNN(on);
}

void sync() {
  torch::cuda::synchronize();
}

double peak_allocated_mib() {
#if LOCO_WITH_CUDA
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return double(stats.allocated_bytes[0].peak) / (1 << 20);  // [0]: the aggregate pool
#else
  return NAN;
#endif
}
double peak_reserved_mib() {
#if LOCO_WITH_CUDA
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return double(stats.reserved_bytes[0].peak) / (1 << 20);
#else
  return NAN;
#endif
}
void reset_memory() {
#if LOCO_WITH_CUDA
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
}

// ---- 1. CPU vs CUDA --------------------------------------------------------------------------

// Causal attention written out (softmax(q k^T / sqrt(D) + mask) v) against the kernel gpt.cpp
// uses on this LibTorch, on `device`, in `dtype`; the reference is float64 on the CPU.
void check_attention(const torch::Device& device, torch::Dtype dtype) {
  torch::manual_seed(7);
  const int64_t B = 2, H = 4, T = 256, D = 64;
  auto q = torch::randn({B, H, T, D}, torch::kFloat64),
       k = torch::randn({B, H, T, D}, torch::kFloat64),
       v = torch::randn({B, H, T, D}, torch::kFloat64);
  auto mask =
      torch::full({T, T}, -std::numeric_limits<double>::infinity(), torch::kFloat64).triu(1);
  auto ref = torch::matmul(
      torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D)) + mask, -1), v);
  auto qd = q.to(device, dtype), kd = k.to(device, dtype), vd = v.to(device, dtype);
#if TORCH_VERSION_MAJOR >= 2
  auto out = at::scaled_dot_product_attention(qd, kd, vd, {}, 0.0, /*is_causal=*/true);
#else
  auto md = mask.to(device, dtype);
  auto out = torch::matmul(
      torch::softmax(torch::matmul(qd, kd.transpose(-2, -1)) / std::sqrt(double(D)) + md, -1), vd);
#endif
  double diff = max_abs_diff(out, ref);
  emit("attention", {str("device", device.str()), str("dtype", c10::toString(dtype)),
                     str("kernel", kAttention), num("max_abs_diff_vs_float64", diff)});
  g_summary.push_back("attention on " + device.str() + " " + c10::toString(dtype) +
                      fmt(": max |diff| vs float64 reference %.2e", diff));
}

struct Pass {
  double loss;
  torch::Tensor logits, grad;
};

Pass forward_backward(GPT& model, FlatParams& flat, const torch::Tensor& idx,
                      const torch::Tensor& tgt) {
  Pass p;
  {
    torch::NoGradGuard no_grad;
    p.logits = model->forward(idx.narrow(0, 0, 1)).to(torch::kCPU);
  }
  flat.zero_grad();
  auto loss = model->loss(idx, tgt);
  loss.backward();
  p.loss = loss.item<double>();
  p.grad = flat.grad().to(torch::kCPU).clone();
  return p;
}

// The tiny model's weights: nanochat's init, then noise on every parameter so that the zero-
// initialised head and projections pass gradients through the whole network.
void init_tiny(FlatParams& flat, GPT& model) {
  model->init_weights(1337);
  torch::NoGradGuard no_grad;
  torch::manual_seed(99);
  flat.data().add_(torch::randn({flat.numel()}) * 0.02);
}

// One Muon step (AdamW on embedding and head) from the gradients in flat_c and flat_g, on both
// devices, and how far the weights then differ.
void compare_muon_step(FlatParams& flat_c, FlatParams& flat_g) {
  loco::OptimizerConfig oc;
  oc.name = "muon";
  auto opt_c = loco::make_optimizer(oc, flat_c), opt_g = loco::make_optimizer(oc, flat_g);
  opt_c->step(1.0);
  opt_g->step(1.0);
  // AdamW's first step moves each weight by about lr * sign(g), so an element whose gradient is
  // ~0 may move opposite ways on the two devices: report the Muon matrices apart from the rest.
  double muon_diff = 0, adamw_diff = 0;
  for (const auto& s : flat_c.slots()) {
    double d = max_abs_diff(flat_g.data().narrow(0, s.offset, s.numel),
                            flat_c.data().narrow(0, s.offset, s.numel));
    bool adamw = s.name.rfind("wte.", 0) == 0 || s.name.rfind("lm_head.", 0) == 0;
    (adamw ? adamw_diff : muon_diff) = std::max(adamw ? adamw_diff : muon_diff, d);
  }
  emit("cpu_vs_cuda_muon_step", {num("muon_matrices_max_abs_diff", muon_diff),
                                 num("adamw_params_max_abs_diff", adamw_diff)});
  g_summary.push_back(
      fmt("  after one Muon step: block matrices max |diff| %.2e, embedding/head (AdamW) %.2e",
          muon_diff, adamw_diff));
}

void compare_cpu_cuda(bool have_cuda) {
  const auto cfg = tiny_config();
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);
  GPT model_c(cfg);
  FlatParams flat_c(*model_c);
  init_tiny(flat_c, model_c);
  auto [idx, tgt] = make_batch(cfg, 4, 1, cpu);
  auto t0 = Clock::now();
  auto pc = forward_backward(model_c, flat_c, idx, tgt);
  double cpu_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  emit("cpu_pass", {num("loss", pc.loss), num("grad_l2", pc.grad.norm().item<double>()),
                    num("ms", cpu_ms), str("attention", kAttention)});
  g_summary.push_back(fmt("tiny fp32 CPU: loss %.7f, grad L2 %.4e, forward+backward %.0f ms",
                          pc.loss, pc.grad.norm().item<double>(), cpu_ms));
  if (!have_cuda) return;

  GPT model_g(cfg);
  model_g->to(cuda);
  FlatParams flat_g(*model_g);
  {
    torch::NoGradGuard no_grad;
    flat_g.data().copy_(flat_c.data());
  }
  auto pg = forward_backward(model_g, flat_g, idx.to(cuda), tgt.to(cuda));
  auto gdiff = (pg.grad - pc.grad).abs();
  // The slot whose gradient differs most, relative to its own scale.
  std::string worst;
  double worst_rel = -1;
  for (const auto& s : flat_c.slots()) {
    auto d = gdiff.narrow(0, s.offset, s.numel).max().item<double>();
    auto scale = pc.grad.narrow(0, s.offset, s.numel).abs().max().item<double>();
    double rel = d / std::max(scale, 1e-30);
    if (rel > worst_rel) worst_rel = rel, worst = s.name;
  }
  double loss_diff = std::abs(pg.loss - pc.loss), logit_diff = max_abs_diff(pg.logits, pc.logits);
  double grad_diff = gdiff.max().item<double>(), grad_max = pc.grad.abs().max().item<double>();
  double grad_rel_l2 = ((pg.grad - pc.grad).norm() / pc.grad.norm()).item<double>();
  emit("cpu_vs_cuda",
       {num("loss_cpu", pc.loss), num("loss_cuda", pg.loss), num("loss_abs_diff", loss_diff),
        num("logits_max_abs_diff", logit_diff), num("grad_max_abs_diff", grad_diff),
        num("grad_max_abs", grad_max), num("grad_rel_l2", grad_rel_l2), str("worst_slot", worst),
        num("worst_slot_rel", worst_rel), str("tf32", "off")});
  g_summary.push_back(
      fmt("tiny fp32 CPU vs CUDA: loss %.7f vs %.7f (|diff| %.1e), logits max |diff| %.1e", pc.loss,
          pg.loss, loss_diff, logit_diff));
  g_summary.push_back(fmt("  flat grads: max |diff| %.2e (max |g| %.2e), rel L2 %.2e", grad_diff,
                          grad_max, grad_rel_l2) +
                      ", worst slot " + worst + fmt(" (rel %.1e)", worst_rel));

  compare_muon_step(flat_c, flat_g);
}

// ---- 2. Matmul ceiling ---------------------------------------------------------------------

double matmul_tflops(torch::Dtype dtype, bool tf32) {
  set_tf32(tf32);
  const int64_t n = 8192;
  auto a = torch::randn({n, n}, torch::TensorOptions(torch::kCUDA).dtype(dtype));
  auto b = torch::randn({n, n}, torch::TensorOptions(torch::kCUDA).dtype(dtype));
  for (int i = 0; i < 3; ++i) torch::mm(a, b);
  sync();
  const int reps = 10;
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) torch::mm(a, b);
  sync();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  set_tf32(false);
  return 2.0 * n * n * n * reps / s / 1e12;
}

// ---- 3. Training steps ---------------------------------------------------------------------

struct Peaks {
  double fp32 = NAN, tf32 = NAN, bf16 = NAN;
};

void time_training(const std::string& label, const ModelConfig& cfg, const std::string& opt_name,
                   int64_t B, torch::Dtype dtype, bool tf32, int warmup, int steps,
                   const Peaks& peaks) {
  try {
    reset_memory();
    set_tf32(tf32);
    const torch::Device cuda(torch::kCUDA, 0);
    GPT model(cfg);
    model->to(cuda, dtype);
    model->init_weights(1337);  // on the GPU: the d20 model's CPU init would take seconds
    FlatParams flat(*model);
    loco::OptimizerConfig oc;
    oc.name = opt_name;
    auto opt = loco::make_optimizer(oc, flat);
    auto batch = make_batch(cfg, B, 2, cuda);
    const auto &idx = batch.first, &tgt = batch.second;
    double first_loss = NAN, last_loss = NAN;
    auto step = [&]() {
      flat.zero_grad();
      auto loss = model->loss(idx, tgt);
      loss.backward();
      flat.clip_grad_norm(1.0);  // reads the norm back, as the trainer does: one sync per step
      opt->step(1.0);
      return loss;
    };
    for (int i = 0; i < warmup; ++i) {
      auto l = step().item<double>();
      if (i == 0) first_loss = l;
    }
    sync();
    auto t0 = Clock::now();
    torch::Tensor loss;
    for (int i = 0; i < steps; ++i) loss = step();
    sync();
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    last_loss = loss.item<double>();
    double ms = 1e3 * s / steps, tok_s = double(B * cfg.seq_len) * steps / s;
    double achieved = model->flops_per_token() * tok_s / 1e12;  // TFLOP/s
    double peak = dtype == torch::kBFloat16 ? peaks.bf16 : (tf32 ? peaks.tf32 : peaks.fp32);
    double mfu = achieved / peak, mfu_bf16 = achieved / peaks.bf16;
    std::string prec = dtype == torch::kBFloat16 ? "bf16" : (tf32 ? "fp32+tf32" : "fp32");
    emit("train",
         {str("model", label), str("optimizer", opt_name), num("batch", double(B)),
          num("seq_len", double(cfg.seq_len)), str("precision", prec),
          num("params", double(model->num_params())), num("steps", steps), num("ms_per_step", ms),
          num("tokens_per_s", tok_s), num("model_tflops", achieved),
          num("mfu_vs_same_precision_peak", mfu), num("mfu_vs_bf16_peak", mfu_bf16),
          num("peak_allocated_mib", peak_allocated_mib()),
          num("peak_reserved_mib", peak_reserved_mib()), num("loss_first", first_loss),
          num("loss_last", last_loss)});
    g_summary.push_back(
        label + " " + opt_name + " " + prec +
        fmt(" B=%.0f: %.2f ms/step, %.0f tok/s, %.1f TFLOP/s", double(B), ms, tok_s, achieved) +
        fmt(" (MFU %.1f%% of same-precision peak, %.1f%% of bf16), peak %.0f MiB", 100 * mfu,
            100 * mfu_bf16, peak_allocated_mib()));
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    emit("train_error", {str("model", label), str("optimizer", opt_name), num("batch", double(B)),
                         str("error", what)});
    g_summary.push_back(label + " " + opt_name + fmt(" B=%.0f FAILED: ", double(B)) + what);
  }
  set_tf32(false);
  reset_memory();
}

void print_summary() {
  std::printf("\n== loco_gpu_check summary (LibTorch %s, attention: %s) ==\n", TORCH_VERSION,
              kAttention);
  for (const auto& line : g_summary) std::printf("%s\n", line.c_str());
}

}  // namespace

int main() {
  set_tf32(false);
  const bool have_cuda = torch::cuda::is_available();
  emit("env",
       {str("torch", TORCH_VERSION), num("torch_major", TORCH_VERSION_MAJOR),
        str("attention", kAttention), num("cuda_devices", double(torch::cuda::device_count())),
        num("cuda_allocator_stats", LOCO_WITH_CUDA + 0.0)});
  try {
    check_attention(torch::Device(torch::kCPU), torch::kFloat32);
    compare_cpu_cuda(have_cuda);
    if (!have_cuda) {
      print_summary();
      std::printf("no CUDA device: ran the CPU part only\n");
      return 0;
    }
    check_attention(torch::Device(torch::kCUDA, 0), torch::kFloat32);
    check_attention(torch::Device(torch::kCUDA, 0), torch::kBFloat16);
  } catch (const std::exception& e) {
    std::string what = e.what();
    emit("error", {str("stage", "compare"), str("error", what.substr(0, what.find('\n')))});
    if (!have_cuda) return 1;
  }

  Peaks peaks;
  peaks.fp32 = matmul_tflops(torch::kFloat32, false);
  peaks.tf32 = matmul_tflops(torch::kFloat32, true);
  peaks.bf16 = matmul_tflops(torch::kBFloat16, false);
  emit("matmul_peak", {num("n", 8192), num("fp32_tflops", peaks.fp32),
                       num("tf32_tflops", peaks.tf32), num("bf16_tflops", peaks.bf16)});
  g_summary.push_back(fmt("matmul 8192^3: fp32 %.1f, tf32 %.1f, bf16 %.1f TFLOP/s", peaks.fp32,
                          peaks.tf32, peaks.bf16));

  const auto tiny = tiny_config(), d20 = d20_config();
  for (const char* opt : {"adamw", "muon"})
    for (int64_t B : {8, 32})
      time_training("tiny", tiny, opt, B, torch::kFloat32, false, 5, 30, peaks);
  time_training("d20", d20, "muon", 8, torch::kFloat32, false, 2, 4, peaks);
  time_training("d20", d20, "muon", 8, torch::kFloat32, true, 2, 4, peaks);
  time_training("d20", d20, "muon", 8, torch::kBFloat16, false, 2, 4, peaks);

  print_summary();
  return 0;
}

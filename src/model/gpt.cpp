// nanochat's GPT in LibTorch: see include/loco/model.h for the architecture.
#include "loco/model.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <malloc.h>

#include <cmath>

namespace loco {
namespace {

// Causal attention over q, k, v: [B, H, T, D].
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& mask) {
#if TORCH_VERSION_MAJOR >= 2
  (void)mask;
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
  int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  auto q3 = q.reshape({B * H, T, D}), k3 = k.reshape({B * H, T, D});
  auto v3 = v.reshape({B * H, T, D});
  // mask + scale * q k^T in one kernel; the mask is 0 on and below the diagonal, -inf above.
  auto scores = torch::baddbmm(mask.narrow(0, 0, T).narrow(1, 0, T), q3, k3.transpose(1, 2),
                               /*beta=*/1.0, /*alpha=*/1.0 / std::sqrt(double(D)));
  return torch::bmm(torch::softmax(scores, -1), v3).view({B, H, T, D});
#endif
}

// A step allocates and frees the same large activations every time. With glibc's defaults,
// blocks of 128 KiB and more are mapped fresh and handed back to the kernel, so every step
// page-faults (and zeroes) them again: ~100K faults, 10-20% of a CPU step. Keeping freed memory
// in the heap makes the next step reuse it. Process-wide, set once, glibc only.
void keep_freed_memory_in_heap() {
#ifdef __GLIBC__
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum; larger blocks are still mapped
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
#endif
}

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

}  // namespace

AttentionImpl::AttentionImpl(int64_t n_embd, int64_t n_head) : n_head_(n_head) {
  c_q = register_module("c_q", linear(n_embd, n_embd));
  c_k = register_module("c_k", linear(n_embd, n_embd));
  c_v = register_module("c_v", linear(n_embd, n_embd));
  c_proj = register_module("c_proj", linear(n_embd, n_embd));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& mask) {
  int64_t B = x.size(0), T = x.size(1), C = x.size(2), D = C / n_head_;
  auto q = rms_norm(rotary(c_q(x).view({B, T, n_head_, D}), cos, sin));
  auto k = rms_norm(rotary(c_k(x).view({B, T, n_head_, D}), cos, sin));
  auto v = c_v(x).view({B, T, n_head_, D});
  auto y = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask);
  return c_proj(y.transpose(1, 2).reshape({B, T, C}));
}

MLPImpl::MLPImpl(int64_t n_embd) {
  c_fc = register_module("c_fc", linear(n_embd, 4 * n_embd));
  c_proj = register_module("c_proj", linear(4 * n_embd, n_embd));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  return c_proj(relu_square(c_fc(x)));
}

BlockImpl::BlockImpl(int64_t n_embd, int64_t n_head) {
  attn = register_module("attn", Attention(n_embd, n_head));
  mlp = register_module("mlp", MLP(n_embd));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin, const torch::Tensor& mask) {
  auto h = x + attn(rms_norm(x), cos, sin, mask);
  return h + mlp(rms_norm(h));
}

GPTImpl::GPTImpl(const ModelConfig& config) : config_(config) {
  keep_freed_memory_in_heap();
  TORCH_CHECK(config.n_embd % config.n_head == 0, "n_embd ", config.n_embd,
              " must be divisible by n_head ", config.n_head);
  int64_t head_dim = config.n_embd / config.n_head;
  TORCH_CHECK(head_dim % 2 == 0, "head dim must be even for rotary, got ", head_dim);
  wte = register_module("wte", torch::nn::Embedding(config.vocab_size, config.n_embd));
  lm_head = register_module("lm_head", linear(config.n_embd, config.vocab_size));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layer; ++i)
    blocks->push_back(Block(config.n_embd, config.n_head));

  auto inv_freq =
      1.0 / torch::pow(10000.0, torch::arange(0, head_dim, 2, torch::kFloat64) / head_dim);
  auto freqs = torch::outer(torch::arange(config.seq_len, torch::kFloat64), inv_freq);
  cos_ = register_buffer(
      "cos", freqs.cos().to(torch::kFloat32).view({1, config.seq_len, 1, head_dim / 2}));
  sin_ = register_buffer(
      "sin", freqs.sin().to(torch::kFloat32).view({1, config.seq_len, 1, head_dim / 2}));
  mask_ = register_buffer(
      "mask", torch::full({config.seq_len, config.seq_len}, -std::numeric_limits<float>::infinity())
                  .triu(1));
}

torch::Tensor GPTImpl::features(const torch::Tensor& idx) {
  int64_t T = idx.size(1);
  TORCH_CHECK(T <= config_.seq_len, "sequence of ", T, " tokens is longer than seq_len ",
              config_.seq_len);
  auto cos = cos_.narrow(1, 0, T), sin = sin_.narrow(1, 0, T);
  auto x = rms_norm(wte(idx));
  for (const auto& block : *blocks) x = block->as<Block>()->forward(x, cos, sin, mask_);
  return rms_norm(x);
}

std::vector<torch::Tensor> GPTImpl::layer_states(const torch::Tensor& idx) {
  int64_t T = idx.size(1);
  TORCH_CHECK(T <= config_.seq_len, "sequence of ", T, " tokens is longer than seq_len ",
              config_.seq_len);
  auto cos = cos_.narrow(1, 0, T), sin = sin_.narrow(1, 0, T);
  std::vector<torch::Tensor> states{rms_norm(wte(idx))};
  for (const auto& block : *blocks)
    states.push_back(block->as<Block>()->forward(states.back(), cos, sin, mask_));
  return states;
}

torch::Tensor GPTImpl::forward(const torch::Tensor& idx) {
  auto logits = lm_head(features(idx)).to(torch::kFloat32);
  if (config_.softcap > 0) logits = config_.softcap * torch::tanh(logits / config_.softcap);
  return logits;
}

torch::Tensor GPTImpl::token_losses(const torch::Tensor& idx, const torch::Tensor& target) {
  auto logits = forward(idx);
  auto flat = torch::nn::functional::cross_entropy(
      logits.view({-1, logits.size(-1)}), target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return flat.view_as(target);
}

torch::Tensor GPTImpl::loss(const torch::Tensor& idx, const torch::Tensor& target) {
  auto x = features(idx);
  return head_loss(x.view({-1, x.size(-1)}), lm_head->weight, target.reshape({-1}),
                   config_.softcap);
}

void GPTImpl::init_weights(int64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  wte->weight.normal_(0.0, 1.0);
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* lin = module->as<torch::nn::Linear>()) {
      double fan_out = lin->weight.size(0), fan_in = lin->weight.size(1);
      lin->weight.normal_(0.0,
                          1.0 / std::sqrt(fan_in) * std::min(1.0, std::sqrt(fan_out / fan_in)));
    }
  }
  lm_head->weight.zero_();
  for (const auto& block : *blocks) {
    block->as<Block>()->attn->c_proj->weight.zero_();
    block->as<Block>()->mlp->c_proj->weight.zero_();
  }
}

int64_t GPTImpl::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

double GPTImpl::flops_per_token() const {
  double non_embedding = double(num_params() - wte->weight.numel());
  return 6.0 * non_embedding + 12.0 * config_.n_layer * config_.n_embd * config_.seq_len;
}

}  // namespace loco

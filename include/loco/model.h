// The GPT of nanochat's design, in LibTorch.
//
// Token embedding -> RMSNorm -> n_layer blocks -> RMSNorm -> untied head -> logit soft-cap.
// A block is x + attn(norm(x)), then x + mlp(norm(x)). RMSNorm has no parameters; attention
// applies rotary embeddings then RMSNorm to queries and keys (QK-norm), is causal, and has no
// biases; the MLP is ReLU². tests/golden/reference_gpt.py is an independent PyTorch version of
// the same model that the golden test checks against.
//
// Parameters are registered embedding, head, then blocks, so that the parameters AdamW handles
// under Muon (embedding and head) are contiguous at the front of a flat buffer (see optim.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "loco/config.h"
#include "loco/kernels.h"  // rms_norm

namespace loco {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t n_embd, int64_t n_head);
  // x: [B, T, C]; cos, sin: [1, T, 1, D/2] rotary tables; mask: [T, T] additive causal mask.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask);

  torch::nn::Linear c_q{nullptr}, c_k{nullptr}, c_v{nullptr}, c_proj{nullptr};

 private:
  int64_t n_head_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(int64_t n_embd);
  torch::Tensor forward(const torch::Tensor& x);  // c_proj(relu(c_fc(x))²)

  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t n_embd, int64_t n_head);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask);

  Attention attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(Block);

class GPTImpl : public torch::nn::Module {
 public:
  // The first GPT of a process also raises glibc's mmap and trim thresholds, so that the
  // activations a step frees are reused by the next rather than page-faulted in again.
  explicit GPTImpl(const ModelConfig& config);

  // idx: [B, T] int64 with T <= seq_len. Returns soft-capped logits [B, T, V] in float32.
  torch::Tensor forward(const torch::Tensor& idx);
  // Cross-entropy of each position: [B, T].
  torch::Tensor token_losses(const torch::Tensor& idx, const torch::Tensor& target);
  // Mean cross-entropy over the batch (the training loss), fused with the head (head_loss in
  // kernels.h): it never materialises the logits.
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& target);

  // The residual stream [B, T, C] after the embedding (index 0) and after each block (index
  // i + 1), as the blocks see it: for comparing two models' representations (loco eval).
  std::vector<torch::Tensor> layer_states(const torch::Tensor& idx);
  // nanochat's init: Linear ~ N(0, 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in))), embedding
  // ~ N(0, 1), head and both residual projections zero. Uses torch's global generator.
  void init_weights(int64_t seed);

  int64_t num_params() const;
  // Training FLOPs per token: 6 * (params - embedding) + 12 * n_layer * n_embd * seq_len.
  double flops_per_token() const;
  const ModelConfig& config() const { return config_; }

  torch::nn::Embedding wte{nullptr};
  torch::nn::Linear lm_head{nullptr};
  torch::nn::ModuleList blocks{nullptr};

 private:
  // Final normalised hidden states [B, T, C], the input of the head.
  torch::Tensor features(const torch::Tensor& idx);

  ModelConfig config_;
  torch::Tensor cos_, sin_, mask_;  // rotary tables and causal mask for seq_len positions
};
TORCH_MODULE(GPT);

}  // namespace loco

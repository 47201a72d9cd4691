// Optimizers over one flat parameter buffer: AdamW, Muon (+AdamW), clipping, LR schedules.
//
// FlatParams re-points every parameter of a module into one contiguous tensor and every gradient
// into another, so clipping and AdamW are a handful of tensor ops, and later the pseudo-gradient
// of DiLoCo and the buckets of DDP are slices of the same memory. Backward accumulates into the
// flat gradient in place as long as zero_grad() zeroes it (never resets it to undefined).
#pragma once

#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loco/config.h"

namespace loco {

class FlatParams {
 public:
  struct Slot {
    std::string name;
    int64_t offset = 0, numel = 0;
    std::vector<int64_t> shape;
    torch::Tensor param;  // the module's parameter, a view of data()
  };

  // Moves the module's parameters (already on their device) into one buffer, in registration
  // order, keeping their values. Without `with_grad` no gradient buffer is allocated (a model
  // that is only evaluated, as the coordinator's: grad() is undefined).
  explicit FlatParams(torch::nn::Module& module, bool with_grad = true);

  torch::Tensor& data() { return data_; }
  torch::Tensor& grad() { return grad_; }
  const std::vector<Slot>& slots() const { return slots_; }
  const Slot& slot(const std::string& name) const;
  int64_t numel() const { return data_.numel(); }

  void zero_grad() { grad_.zero_(); }
  // Scales gradients so that their global L2 norm is at most max_norm (as torch's
  // clip_grad_norm_, with 1e-6 in the denominator). Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

 private:
  torch::Tensor data_, grad_;
  std::vector<Slot> slots_;
};

// An optimizer step over (part of) a FlatParams. `lr_scale` is the schedule's multiplier.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void step(double lr_scale) = 0;
  // Named state tensors (for checkpoints); load_state copies values into the existing tensors.
  virtual std::map<std::string, torch::Tensor> state() const = 0;
  void load_state(const std::map<std::string, torch::Tensor>& saved);
};

// AdamW over contiguous ranges of the flat buffer, each with its own peak lr; the same update
// as torch.optim.AdamW (decoupled weight decay, bias correction).
class AdamW : public Optimizer {
 public:
  struct Group {
    int64_t offset, numel;
    double lr;
  };
  AdamW(FlatParams& params, std::vector<Group> groups, double beta1, double beta2, double eps,
        double weight_decay);
  void step(double lr_scale) override;
  std::map<std::string, torch::Tensor> state() const override;

 private:
  FlatParams& params_;
  std::vector<Group> groups_;
  double beta1_, beta2_, eps_, weight_decay_;
  torch::Tensor exp_avg_, exp_avg_sq_, step_;  // step_ as a 0-d int64 tensor, for checkpoints
};

// Newton-Schulz orthogonalisation (quintic, nanochat's coefficients) of a batch of matrices
// [..., r, c]; returns an approximately orthogonal matrix of the same shape.
torch::Tensor newton_schulz(const torch::Tensor& g, int64_t steps);

// Muon for the 2-D matrices of the transformer blocks (Nesterov momentum, Newton-Schulz,
// lr * sqrt(max(1, rows/cols))), AdamW for the embedding and the head.
class Muon : public Optimizer {
 public:
  Muon(FlatParams& params, const OptimizerConfig& config);
  void step(double lr_scale) override;
  std::map<std::string, torch::Tensor> state() const override;

 private:
  FlatParams& params_;
  std::vector<const FlatParams::Slot*> matrices_;
  std::map<std::string, torch::Tensor> momentum_;  // per matrix name
  double lr_, beta_;
  int64_t ns_steps_;
  std::unique_ptr<AdamW> adamw_;
};

// The optimizer named by config.name ("adamw" | "muon").
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, FlatParams& params);

// The outer optimizer of DiLoCo: SGD with Nesterov momentum in PyTorch's convention, applied to
// the averaged pseudo-gradient delta (= theta_start - theta_worker):
//   v <- mu * v + delta;   theta <- theta - lr * (delta + mu * v)
// (torch.optim.SGD(nesterov=True) with dampening 0 and the pseudo-gradient as the gradient).
class OuterNesterov {
 public:
  OuterNesterov(double lr, double momentum, const torch::Tensor& like);
  void step(torch::Tensor& theta, const torch::Tensor& delta);
  // The step on the range [offset, offset + delta.numel()) of theta and the velocity alone
  // (streaming DiLoCo's fragments); the same arithmetic as step().
  void step(torch::Tensor& theta, const torch::Tensor& delta, int64_t offset);
  torch::Tensor& velocity() { return velocity_; }

 private:
  double lr_, momentum_;
  torch::Tensor velocity_;
};

// LR multiplier in [0, 1] at step (0-based) of max_steps: linear warm-up, then cosine decay to
// min_lr_frac, or constant and a linear warm-down over the last warmdown_frac of the run.
double lr_multiplier(const ScheduleConfig& schedule, int64_t step, int64_t max_steps);

}  // namespace loco

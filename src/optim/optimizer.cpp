// FlatParams, AdamW and Muon over one flat parameter buffer (see include/loco/optim.h).
#include <torch/torch.h>

#include <cmath>

#include "loco/optim.h"

namespace loco {

FlatParams::FlatParams(torch::nn::Module& module, bool with_grad) {
  auto named = module.named_parameters(/*recurse=*/true);
  int64_t total = 0;
  for (const auto& item : named) total += item.value().numel();
  TORCH_CHECK(total > 0, "module has no parameters");
  auto first = named[0].value();
  data_ = torch::empty({total}, first.options().requires_grad(false));
  if (with_grad) grad_ = torch::zeros({total}, first.options().requires_grad(false));
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& item : named) {
    torch::Tensor p = item.value();
    int64_t n = p.numel();
    auto view = data_.narrow(0, offset, n).view(p.sizes());
    view.copy_(p);
    p.set_data(view);
    if (with_grad) p.mutable_grad() = grad_.narrow(0, offset, n).view(p.sizes());
    slots_.push_back({item.key(), offset, n, p.sizes().vec(), p});
    offset += n;
  }
}

const FlatParams::Slot& FlatParams::slot(const std::string& name) const {
  for (const auto& s : slots_)
    if (s.name == name) return s;
  TORCH_CHECK(false, "no parameter named '", name, "'");
}

double FlatParams::clip_grad_norm(double max_norm) {
  double norm = grad_.norm().item<double>();
  double coef = max_norm / (norm + 1e-6);
  if (max_norm > 0 && coef < 1.0) grad_.mul_(coef);
  return norm;
}

void Optimizer::load_state(const std::map<std::string, torch::Tensor>& saved) {
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : state()) {
    auto it = saved.find(name);
    TORCH_CHECK(it != saved.end(), "optimizer state '", name, "' missing from checkpoint");
    TORCH_CHECK(it->second.sizes() == tensor.sizes(), "optimizer state '", name, "': expected ",
                tensor.sizes(), ", checkpoint has ", it->second.sizes());
    tensor.copy_(it->second);
  }
}

AdamW::AdamW(FlatParams& params, std::vector<Group> groups, double beta1, double beta2, double eps,
             double weight_decay)
    : params_(params),
      groups_(std::move(groups)),
      beta1_(beta1),
      beta2_(beta2),
      eps_(eps),
      weight_decay_(weight_decay) {
  exp_avg_ = torch::zeros_like(params.data());
  exp_avg_sq_ = torch::zeros_like(params.data());
  step_ = torch::zeros({}, torch::kInt64);
}

void AdamW::step(double lr_scale) {
  torch::NoGradGuard no_grad;
  step_ += 1;
  double t = double(step_.item<int64_t>());
  double bias1 = 1.0 - std::pow(beta1_, t), bias2_sqrt = std::sqrt(1.0 - std::pow(beta2_, t));
  for (const auto& g : groups_) {
    double lr = g.lr * lr_scale;
    auto p = params_.data().narrow(0, g.offset, g.numel);
    auto grad = params_.grad().narrow(0, g.offset, g.numel);
    auto m = exp_avg_.narrow(0, g.offset, g.numel);
    auto v = exp_avg_sq_.narrow(0, g.offset, g.numel);
    p.mul_(1.0 - lr * weight_decay_);
    m.lerp_(grad, 1.0 - beta1_);
    v.mul_(beta2_).addcmul_(grad, grad, 1.0 - beta2_);
    auto denom = v.sqrt().div_(bias2_sqrt).add_(eps_);
    p.addcdiv_(m, denom, -lr / bias1);
  }
}

std::map<std::string, torch::Tensor> AdamW::state() const {
  return {{"adamw.exp_avg", exp_avg_}, {"adamw.exp_avg_sq", exp_avg_sq_}, {"adamw.step", step_}};
}

torch::Tensor newton_schulz(const torch::Tensor& g, int64_t steps) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  bool tall = g.size(-2) > g.size(-1);
  auto x = tall ? g.transpose(-2, -1) : g;
  x = x / (x.norm(2, {-2, -1}, /*keepdim=*/true) + 1e-7);
  for (int64_t i = 0; i < steps; ++i) {
    auto A = torch::matmul(x, x.transpose(-2, -1));
    auto B = b * A + c * torch::matmul(A, A);
    x = a * x + torch::matmul(B, x);
  }
  return tall ? x.transpose(-2, -1) : x;
}

Muon::Muon(FlatParams& params, const OptimizerConfig& config)
    : params_(params), lr_(config.matrix_lr), beta_(config.momentum), ns_steps_(config.ns_steps) {
  std::vector<AdamW::Group> adam_groups;
  for (const auto& s : params.slots()) {
    bool is_embedding = s.name.rfind("wte.", 0) == 0;
    bool is_head = s.name.rfind("lm_head.", 0) == 0;
    if (is_embedding || is_head) {
      adam_groups.push_back(
          {s.offset, s.numel, is_embedding ? config.embedding_lr : config.head_lr});
    } else {
      TORCH_CHECK(s.shape.size() == 2, "Muon expects 2-D block parameters, '", s.name, "' is ",
                  s.shape.size(), "-D");
      matrices_.push_back(&s);
      momentum_[s.name] = torch::zeros(s.shape, params.data().options());
    }
  }
  adamw_ = std::make_unique<AdamW>(params, std::move(adam_groups), config.beta1, config.beta2,
                                   config.eps, config.weight_decay);
}

void Muon::step(double lr_scale) {
  torch::NoGradGuard no_grad;
  adamw_->step(lr_scale);
  // Group same-shaped matrices so Newton-Schulz runs as one batched matmul chain per shape.
  std::map<std::vector<int64_t>, std::vector<const FlatParams::Slot*>> by_shape;
  for (const auto* s : matrices_) by_shape[s->shape].push_back(s);
  for (auto& [shape, slots] : by_shape) {
    std::vector<torch::Tensor> updates;
    for (const auto* s : slots) {
      auto grad = params_.grad().narrow(0, s->offset, s->numel).view(s->shape);
      auto& buf = momentum_[s->name];
      buf.lerp_(grad, 1.0 - beta_);
      updates.push_back(grad.lerp(buf, beta_));  // Nesterov
    }
    auto ortho = newton_schulz(torch::stack(updates), ns_steps_);
    double scale = lr_ * lr_scale * std::sqrt(std::max(1.0, double(shape[0]) / double(shape[1])));
    for (size_t i = 0; i < slots.size(); ++i)
      params_.data()
          .narrow(0, slots[i]->offset, slots[i]->numel)
          .view(shape)
          .add_(ortho[i], -scale);
  }
}

std::map<std::string, torch::Tensor> Muon::state() const {
  auto out = adamw_->state();
  for (const auto& [name, buf] : momentum_) out["muon." + name] = buf;
  return out;
}

OuterNesterov::OuterNesterov(double lr, double momentum, const torch::Tensor& like)
    : lr_(lr), momentum_(momentum), velocity_(torch::zeros_like(like)) {}

void OuterNesterov::step(torch::Tensor& theta, const torch::Tensor& delta) {
  torch::NoGradGuard no_grad;
  velocity_.mul_(momentum_).add_(delta);  // v starts at zero, so the first step gives v = delta
  theta.add_(delta, -lr_).add_(velocity_, -lr_ * momentum_);  // no temporaries
}

void OuterNesterov::step(torch::Tensor& theta, const torch::Tensor& delta, int64_t offset) {
  torch::NoGradGuard no_grad;
  auto v = velocity_.narrow(0, offset, delta.numel());
  auto t = theta.narrow(0, offset, delta.numel());
  v.mul_(momentum_).add_(delta);
  t.add_(delta, -lr_).add_(v, -lr_ * momentum_);
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, FlatParams& params) {
  if (config.name == "muon") return std::make_unique<Muon>(params, config);
  return std::make_unique<AdamW>(params, std::vector<AdamW::Group>{{0, params.numel(), config.lr}},
                                 config.beta1, config.beta2, config.eps, config.weight_decay);
}

}  // namespace loco

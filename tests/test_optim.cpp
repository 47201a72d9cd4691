// Tests of the flat parameter buffer, AdamW (against torch.optim.AdamW), Muon, clipping and
// learning-rate schedules.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "loco/model.h"
#include "loco/optim.h"
#include "test_util.h"

using namespace loco;
using loco::testing::make_dict;
using loco::testing::save_dump;
using loco::testing::tensor_dict;

namespace {

ModelConfig small() {
  ModelConfig m;
  m.n_layer = 2, m.n_head = 2, m.n_embd = 16, m.seq_len = 8, m.vocab_size = 32;
  return m;
}

}  // namespace

TEST(FlatParams, ParametersAndGradientsAreViewsOfOneBuffer) {
  GPT model(small());
  model->init_weights(1);
  auto before = model->wte->weight.clone();
  FlatParams flat(*model);
  EXPECT_EQ(flat.numel(), model->num_params());
  EXPECT_TRUE(torch::equal(model->wte->weight, before));  // values kept
  flat.data().fill_(0.5);
  EXPECT_EQ(model->lm_head->weight.mean().item<float>(), 0.5f);

  auto x = torch::randint(32, {2, 8}, torch::kInt64);
  model->loss(x, x).backward();
  EXPECT_GT(flat.grad().abs().sum().item<double>(), 0.0);  // backward wrote into the flat grad
  const auto& s = flat.slot("lm_head.weight");
  EXPECT_TRUE(torch::equal(flat.grad().narrow(0, s.offset, s.numel).view(s.shape),
                           model->lm_head->weight.grad()));
  flat.zero_grad();
  model->loss(x, x).backward();
  auto once = flat.grad().clone();
  model->loss(x, x).backward();  // accumulates in place
  EXPECT_TRUE(torch::allclose(flat.grad(), 2 * once, 1e-5, 1e-7));
}

TEST(FlatParams, ClippingMatchesTorch) {
  GPT a(small()), b(small());
  a->init_weights(3), b->init_weights(3);
  FlatParams flat(*a);
  auto x = torch::randint(32, {2, 8}, torch::kInt64);
  a->loss(x, x).backward();
  b->loss(x, x).backward();
  double norm = flat.clip_grad_norm(0.01);
  double torch_norm = torch::nn::utils::clip_grad_norm_(b->parameters(), 0.01);
  EXPECT_NEAR(norm, torch_norm, 1e-5 * torch_norm);
  EXPECT_TRUE(torch::allclose(a->lm_head->weight.grad(), b->lm_head->weight.grad(), 1e-5, 1e-8));
  EXPECT_NEAR(flat.grad().norm().item<double>(), 0.01, 1e-6);
}

TEST(AdamW, MatchesTorchOptimAdamW) {
  // Three steps with random gradients and per-step learning rates, checked by the reference
  // script against torch.optim.AdamW in float64.
  GPT model(small());
  model->init_weights(5);
  FlatParams flat(*model);
  std::map<std::string, torch::Tensor> before, grads;
  for (const auto& s : flat.slots()) before[s.name] = s.param.detach().clone();
  AdamW opt(flat, {{0, flat.numel(), 1.0}}, 0.9, 0.95, 1e-8, 0.1);
  const int steps = 3;
  auto lrs = torch::tensor({1e-2, 5e-3, 2e-3}, torch::kFloat64);
  std::map<std::string, std::vector<torch::Tensor>> per_step;
  torch::manual_seed(1);
  for (int i = 0; i < steps; ++i) {
    flat.grad().normal_();
    for (const auto& s : flat.slots())
      per_step[s.name].push_back(flat.grad().narrow(0, s.offset, s.numel).view(s.shape).clone());
    opt.step(lrs[i].item<double>());
  }
  std::map<std::string, torch::Tensor> after;
  for (const auto& s : flat.slots()) {
    after[s.name] = s.param.detach().clone();
    grads[s.name] = torch::stack(per_step[s.name]);
  }
  auto hp = make_dict();
  hp.insert("beta1", 0.9), hp.insert("beta2", 0.95), hp.insert("eps", 1e-8);
  hp.insert("weight_decay", 0.1);
  auto dump = make_dict();
  dump.insert("params_before", tensor_dict(before));
  dump.insert("grads", tensor_dict(grads));
  dump.insert("lrs", lrs);
  dump.insert("hp", hp);
  dump.insert("params_after", tensor_dict(after));
  std::string path = loco::testing::temp_dir() + "/adamw.pt";
  save_dump(path, dump);
  auto result = loco::testing::run_python("tests/golden/reference_gpt.py adamw " + path);
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST(AdamW, StateRoundTripsThroughLoadState) {
  GPT model(small());
  FlatParams flat(*model);
  AdamW a(flat, {{0, flat.numel(), 0.1}}, 0.9, 0.95, 1e-8, 0.0);
  flat.grad().fill_(1.0);
  a.step(1.0);
  AdamW b(flat, {{0, flat.numel(), 0.1}}, 0.9, 0.95, 1e-8, 0.0);
  b.load_state(a.state());
  for (auto& [name, t] : a.state()) EXPECT_TRUE(torch::equal(t, b.state().at(name))) << name;
}

TEST(Muon, NewtonSchulzOrthogonalises) {
  torch::manual_seed(0);
  auto g = torch::randn({3, 16, 48});
  auto o = newton_schulz(g, 5);
  EXPECT_EQ(o.sizes(), g.sizes());
  // Singular values land near 1 (the quintic iteration is deliberately loose, ~0.7..1.2).
  for (int i = 0; i < 3; ++i) {
    auto s = at::linalg_svdvals(o[i]);
    EXPECT_GT(s.min().item<double>(), 0.5);
    EXPECT_LT(s.max().item<double>(), 1.3);
  }
  auto tall = newton_schulz(torch::randn({48, 16}), 5);
  EXPECT_EQ(tall.sizes(), (std::vector<int64_t>{48, 16}));
}

TEST(Muon, UpdatesMatricesWithMuonAndTheRestWithAdamW) {
  GPT model(small());
  model->init_weights(2);
  FlatParams flat(*model);
  flat.data().normal_(0.0, 0.3);  // the real init zeroes the projections: no gradient to c_q
  OptimizerConfig config;
  config.name = "muon";
  auto opt = make_optimizer(config, flat);
  auto before = flat.data().clone();
  auto x = torch::randint(32, {2, 8}, torch::kInt64);
  model->loss(x, x).backward();
  opt->step(1.0);
  auto state = opt->state();
  EXPECT_TRUE(state.count("muon.blocks.0.attn.c_q.weight"));
  EXPECT_FALSE(state.count("muon.wte.weight"));
  const auto& head = flat.slot("lm_head.weight");
  EXPECT_FALSE(torch::equal(flat.data().narrow(0, head.offset, head.numel),
                            before.narrow(0, head.offset, head.numel)));
  // A Muon update of a square matrix has spectral norm ~ matrix_lr.
  const auto& fc = flat.slot("blocks.0.attn.c_q.weight");
  auto delta = (flat.data() - before).narrow(0, fc.offset, fc.numel).view(fc.shape);
  double top = at::linalg_svdvals(delta).max().item<double>();
  EXPECT_GT(top, 0.5 * config.matrix_lr);
  EXPECT_LT(top, 1.5 * config.matrix_lr);
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  ScheduleConfig s;
  s.kind = "cosine", s.warmup_steps = 10, s.min_lr_frac = 0.1;
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 9, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 10, 100), 1.0);
  EXPECT_NEAR(lr_multiplier(s, 55, 100), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(lr_multiplier(s, 100, 100), 0.1, 1e-12);
  for (int i = 11; i < 100; ++i) EXPECT_LE(lr_multiplier(s, i, 100), lr_multiplier(s, i - 1, 100));
}

TEST(Schedule, LinearHoldsThenWarmsDown) {
  ScheduleConfig s;
  s.kind = "linear", s.warmup_steps = 0, s.warmdown_frac = 0.2, s.min_lr_frac = 0.0;
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 0, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 79, 100), 1.0);
  EXPECT_NEAR(lr_multiplier(s, 90, 100), 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier(s, 100, 100), 0.0, 1e-12);
}

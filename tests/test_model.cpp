// Tests of the GPT: golden comparison against an independent PyTorch model, causality, init.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "loco/model.h"
#include "loco/optim.h"
#include "test_util.h"

using namespace loco;
using loco::testing::make_dict;
using loco::testing::run_python;
using loco::testing::save_dump;
using loco::testing::tensor_dict;

namespace {

ModelConfig small_config(double softcap = 15.0) {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.seq_len = 16;
  m.vocab_size = 64;
  m.softcap = softcap;
  return m;
}

// Random weights everywhere (the real init zeroes the head and projections, which would leave
// most gradients trivially zero).
GPT random_model(const ModelConfig& m, int64_t seed) {
  GPT model(m);
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.3);
  return model;
}

// Runs one batch through a random-weight model and dumps weights, batch, loss and gradients
// (gradient `tweak`, if named, shifted by 1e-3) for tests/golden/reference_gpt.py. Returns the
// dump's path.
std::string golden_dump(const ModelConfig& m, const std::string& tag,
                        const std::string& tweak = "") {
  GPT model = random_model(m, 7);
  torch::manual_seed(11);
  auto input = torch::randint(m.vocab_size, {3, m.seq_len}, torch::kInt64);
  auto target = torch::randint(m.vocab_size, {3, m.seq_len}, torch::kInt64);
  auto loss = model->loss(input, target);
  loss.backward();

  std::map<std::string, torch::Tensor> params, grads;
  for (const auto& item : model->named_parameters()) {
    params[item.key()] = item.value();
    grads[item.key()] = item.value().grad().clone();
  }
  if (!tweak.empty()) grads.at(tweak) += 1e-3;
  auto config = make_dict();
  config.insert("n_layer", m.n_layer);
  config.insert("n_head", m.n_head);
  config.insert("n_embd", m.n_embd);
  config.insert("seq_len", m.seq_len);
  config.insert("vocab_size", m.vocab_size);
  config.insert("softcap", m.softcap);
  auto dump = make_dict();
  dump.insert("config", config);
  dump.insert("params", tensor_dict(params));
  dump.insert("grads", tensor_dict(grads));
  dump.insert("input", input);
  dump.insert("target", target);
  dump.insert("loss", loss.detach());
  std::string path = loco::testing::temp_dir(tag) + "/golden.pt";
  save_dump(path, dump);
  return path;
}

void golden_check(const ModelConfig& m, const std::string& tag) {
  auto result = run_python("tests/golden/reference_gpt.py check " + golden_dump(m, tag) +
                           " --rtol 1e-4 --atol 2e-6");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("golden: PASS"), std::string::npos) << result.output;
}

}  // namespace

TEST(Model, GoldenLossAndGradientsMatchPyTorchReference) {
  golden_check(small_config(), "cap");
}

TEST(Model, GoldenWithoutSoftcap) {
  golden_check(small_config(0.0), "nocap");
}

TEST(Model, GoldenCheckDetectsAWrongGradient) {
  // The comparison itself must be able to fail: a dump with one gradient off is refused.
  auto path = golden_dump(small_config(), "bad", "blocks.1.mlp.c_fc.weight");
  auto result = run_python("tests/golden/reference_gpt.py check " + path);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("FAIL grad blocks.1.mlp.c_fc.weight"), std::string::npos)
      << result.output;
}

TEST(Model, IsCausal) {
  ModelConfig m = small_config();
  GPT model = random_model(m, 5);
  torch::NoGradGuard no_grad;
  auto a = torch::randint(m.vocab_size, {1, m.seq_len}, torch::kInt64);
  auto b = a.clone();
  b[0][10] = (a[0][10].item<int64_t>() + 1) % m.vocab_size;
  auto la = model->forward(a), lb = model->forward(b);
  EXPECT_TRUE(torch::equal(la.narrow(1, 0, 10), lb.narrow(1, 0, 10)));
  EXPECT_FALSE(torch::allclose(la.narrow(1, 10, 1), lb.narrow(1, 10, 1)));
}

TEST(Model, SoftcapBoundsLogits) {
  ModelConfig m = small_config(2.0);
  GPT model = random_model(m, 9);
  torch::NoGradGuard no_grad;
  auto logits = model->forward(torch::randint(m.vocab_size, {2, m.seq_len}, torch::kInt64));
  EXPECT_LE(logits.abs().max().item<double>(), 2.0);
}

TEST(Model, InitialLossIsUniformBecauseTheHeadStartsAtZero) {
  ModelConfig m = small_config();
  GPT model(m);
  model->init_weights(1);
  EXPECT_EQ(model->lm_head->weight.abs().sum().item<double>(), 0.0);
  for (const auto& block : *model->blocks) {
    EXPECT_EQ(block->as<Block>()->attn->c_proj->weight.abs().sum().item<double>(), 0.0);
    EXPECT_EQ(block->as<Block>()->mlp->c_proj->weight.abs().sum().item<double>(), 0.0);
  }
  EXPECT_NEAR(model->wte->weight.std().item<double>(), 1.0, 0.1);
  auto x = torch::randint(m.vocab_size, {2, m.seq_len}, torch::kInt64);
  EXPECT_NEAR(model->loss(x, x).item<double>(), std::log(double(m.vocab_size)), 1e-5);
}

TEST(Model, InitIsDeterministicInTheSeed) {
  ModelConfig m = small_config();
  GPT a(m), b(m), c(m);
  a->init_weights(42), b->init_weights(42), c->init_weights(43);
  EXPECT_TRUE(torch::equal(a->wte->weight, b->wte->weight));
  EXPECT_FALSE(torch::equal(a->wte->weight, c->wte->weight));
}

TEST(Model, FlopsPerTokenFollowsTheFormula) {
  ModelConfig m = small_config();
  GPT model(m);
  int64_t C = m.n_embd, V = m.vocab_size, L = m.n_layer;
  int64_t block_params = 4 * C * C + 8 * C * C;
  EXPECT_EQ(model->num_params(), 2 * V * C + L * block_params);
  double expected = 6.0 * double(V * C + L * block_params) + 12.0 * L * C * m.seq_len;
  EXPECT_DOUBLE_EQ(model->flops_per_token(), expected);
}

TEST(Model, ShorterSequencesWorkAndLongerOnesAreRefused) {
  ModelConfig m = small_config();
  GPT model = random_model(m, 2);
  torch::NoGradGuard no_grad;
  auto full = torch::randint(m.vocab_size, {1, m.seq_len}, torch::kInt64);
  auto prefix = model->forward(full.narrow(1, 0, 5));
  // Causal: the first 5 positions' logits do not depend on what follows. Within float32
  // rounding of GEMMs of other sizes (AVX2 kernels block them differently from AVX-512 ones);
  // a leak through the mask would move them by O(1).
  auto full_prefix = model->forward(full).narrow(1, 0, 5);
  EXPECT_TRUE(torch::allclose(prefix, full_prefix, 1e-4, 1e-5))
      << (prefix - full_prefix).abs().max().item<float>();
  EXPECT_THROW(model->forward(torch::zeros({1, m.seq_len + 1}, torch::kInt64)), c10::Error);
}

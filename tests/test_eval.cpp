// After pretraining, `loco eval`: linear CKA against the Gram-matrix (HSIC) formula; task files
// refused by file and line; a choice scored as the log-likelihood of the tokens it adds, batched
// choices as if run alone; and through the CLI, a checkpoint's val loss equal to the one its run
// logged, the cloze task loco draws from a corpus, similarity to itself and to an earlier
// checkpoint, and corpora encoded with another tokenizer refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loco/checkpoint.h"
#include "loco/eval.h"
#include "loco/metrics.h"
#include "loco/prepare.h"
#include "loco/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::read_text;
using loco::testing::run_loco;

namespace {

// HSIC form of linear CKA on Gram matrices: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)), K = XX^T.
double gram_cka(const torch::Tensor& x, const torch::Tensor& y) {
  const int64_t n = x.size(0);
  auto h = torch::eye(n, torch::kFloat64) - torch::ones({n, n}, torch::kFloat64) / double(n);
  auto k = x.mm(x.t()), l = y.mm(y.t());
  auto kh = k.mm(h), lh = l.mm(h);
  return (kh.mm(lh).trace() / (kh.mm(kh).trace() * lh.mm(lh).trace()).sqrt()).item<double>();
}

std::string write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const auto& l : lines) out << l << "\n";
  return path;
}

std::string eval_error(const std::string& task_file) {
  try {
    loco::read_task_file(task_file);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Eval, LinearCkaMatchesTheGramFormulaAndItsInvariances) {
  torch::manual_seed(1);
  auto x = torch::randn({40, 6}, torch::kFloat64), y = torch::randn({40, 5}, torch::kFloat64);
  EXPECT_NEAR(loco::linear_cka(x, y), gram_cka(x, y), 1e-9);
  auto mixed = x.narrow(1, 0, 5) + 0.3 * y;
  EXPECT_NEAR(loco::linear_cka(x, mixed), gram_cka(x, mixed), 1e-9);
  // invariant to rotation, isotropic scaling and a shift; 1 against itself
  auto q = std::get<0>(torch::linalg_qr(torch::randn({6, 6}, torch::kFloat64)));
  EXPECT_NEAR(loco::linear_cka(x, 3.0 * x.mm(q) + 1.0), 1.0, 1e-9);
  EXPECT_NEAR(loco::linear_cka(x.to(torch::kFloat32), x.to(torch::kFloat32)), 1.0, 1e-6);
  EXPECT_LT(loco::linear_cka(x, y), 0.5);
}

TEST(Eval, TaskFileErrorsNameTheFileAndTheLine) {
  const std::string dir = loco::testing::temp_dir();
  const std::string good = R"({"context": "a", "choices": [" b", " c"], "answer": 1})";
  auto file = [&](const std::string& bad) {
    return write_lines(dir + "/t.jsonl", {good, "", bad});
  };
  EXPECT_EQ(loco::read_task_file(write_lines(dir + "/ok.jsonl", {good, good})).size(), 2u);
  EXPECT_NE(eval_error(file("{not json")).find("/t.jsonl:3: not a JSON object"), std::string::npos);
  EXPECT_NE(eval_error(file(R"({"context": "a", "choices": [" b", " c"], "answer": 2})"))
                .find("t.jsonl:3: 'answer' 2 is outside 0..1"),
            std::string::npos);
  EXPECT_NE(eval_error(file(R"({"context": "a", "choices": [" b"], "answer": 0})"))
                .find("t.jsonl:3: 'choices' must be a list of at least two strings"),
            std::string::npos);
  EXPECT_NE(eval_error(file(R"({"choices": [" b", " c"], "answer": 0})"))
                .find("t.jsonl:3: 'context' is missing"),
            std::string::npos);
  EXPECT_NE(eval_error(file(R"({"context": "a", "choices": [" b", " c"]})"))
                .find("t.jsonl:3: 'answer' is missing"),
            std::string::npos);
  EXPECT_NE(eval_error(dir + "/none.jsonl").find("cannot read the task file"), std::string::npos);
}

// Each choice is the tokens that context + choice adds to the context; scored together in one
// padded batch, each gets the summed log-probability a lone forward pass gives its tokens.
TEST(Eval, AChoiceScoresTheLogLikelihoodOfTheTokensItAdds) {
  const std::string& data = loco::testing::prepared_sample();
  auto tokenizer = loco::Tokenizer::load(data + "/tokenizer.model");
  loco::ModelConfig m;
  m.n_layer = 2, m.n_head = 2, m.n_embd = 64, m.seq_len = 32, m.vocab_size = 512;
  loco::GPT model(m);
  model->init_weights(5);
  loco::TaskExample e{"The history of the", {" city", " river that runs to the sea", " a"}, 1, 1};
  auto scores = loco::score_choices(*model, tokenizer, e, torch::kCPU);
  ASSERT_EQ(scores.size(), 3u);
  std::vector<int64_t> context = {tokenizer.bos_id()};
  for (int id : tokenizer.encode(e.context)) context.push_back(id);
  torch::NoGradGuard no_grad;
  for (size_t c = 0; c < e.choices.size(); ++c) {
    std::vector<int64_t> ids = {tokenizer.bos_id()};
    for (int id : tokenizer.encode(e.context + e.choices[c])) ids.push_back(id);
    size_t common = 0;
    while (common < context.size() && ids[common] == context[common]) ++common;
    auto t = torch::tensor(ids).unsqueeze(0);
    const int64_t len = t.size(1) - 1;
    auto losses = model->token_losses(t.narrow(1, 0, len), t.narrow(1, 1, len));
    const int64_t added = int64_t(ids.size() - common);
    EXPECT_EQ(scores[c].tokens, added) << c;
    EXPECT_NEAR(scores[c].log_likelihood,
                -losses.narrow(1, len - added, added).sum().item<double>(), 1e-4)
        << c;
  }
  // a choice longer than the model's context is refused, saying so
  e.choices = {" a", std::string(400, 'x')};
  EXPECT_THROW(loco::score_choices(*model, tokenizer, e, torch::kCPU), std::runtime_error);
}

TEST(Eval, TheCliScoresACheckpointAsItsRunDidAndComparesTwo) {
  const std::string dir = loco::testing::temp_dir();
  const std::string config = dir + "/config.yaml";
  std::ofstream(config) << loco::testing::small_run_yaml(dir + "/run");
  auto trained = run_loco("train --config " + config + " --set train.max_steps=12");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  auto ckpts = loco::list_checkpoints(dir + "/run/checkpoints");
  ASSERT_GE(ckpts.size(), 2u);
  const std::string last = ckpts.back(), earlier = ckpts.front();
  double logged = -1;
  for (const auto& r : loco::read_metrics(dir + "/run/metrics.jsonl"))
    if (r.contains("val_loss") && r.at("step") == 12) logged = r.at("val_loss");
  ASSERT_GT(logged, 0);

  const std::string& data = loco::testing::prepared_sample();
  auto cloze = run_loco("data cloze --data " + data + " --out " + dir + "/cloze.jsonl " +
                        "--examples 15 --choices 3 --context-tokens 12 --answer-tokens 6");
  ASSERT_EQ(cloze.exit_code, 0) << cloze.output;
  auto examples = loco::read_task_file(dir + "/cloze.jsonl");
  ASSERT_EQ(examples.size(), 15u) << cloze.output;
  for (const auto& e : examples) {
    EXPECT_EQ(e.choices.size(), 3u);
    EXPECT_FALSE(e.context.empty());
  }

  auto r = run_loco("eval --checkpoint " + last + " --data " + data + " --tasks " + dir +
                    "/cloze.jsonl --similarity " + earlier + " --json " + dir + "/eval.json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(read_text(dir + "/eval.json"));
  EXPECT_EQ(j.at("step"), 12);
  ASSERT_EQ(j.at("corpora").size(), 1u);
  EXPECT_NEAR(j["corpora"][0].at("val_loss").get<double>(), logged, 1e-5 * logged);
  ASSERT_EQ(j.at("tasks").size(), 1u);
  EXPECT_EQ(j["tasks"][0].at("examples"), 15);
  for (const char* k : {"accuracy", "accuracy_norm"}) {
    const double acc = j["tasks"][0].at(k);
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
  }
  auto layers = j.at("similarity").at("layers");
  ASSERT_EQ(layers.size(), 4u);  // embedding, block.0, block.1, head
  EXPECT_EQ(layers[0].at("layer"), "embedding");
  EXPECT_EQ(layers[3].at("layer"), "head");
  EXPECT_TRUE(layers[3].at("cka").is_null());
  for (const auto& l : layers) EXPECT_GT(l.at("weight_rel_l2").get<double>(), 0) << l;
  EXPECT_LT(layers[2].at("cka").get<double>(), 1.0 - 1e-6);

  // the same checkpoint against itself: identical representations and weights
  auto self = run_loco("eval --checkpoint " + last + " --similarity " + last + " --json " + dir +
                       "/self.json");
  ASSERT_EQ(self.exit_code, 0) << self.output;
  for (const auto& l :
       nlohmann::json::parse(read_text(dir + "/self.json"))["similarity"]["layers"]) {
    EXPECT_EQ(l.at("weight_rel_l2").get<double>(), 0.0) << l;
    if (!l.at("cka").is_null()) EXPECT_NEAR(l.at("cka").get<double>(), 1.0, 1e-9) << l;
  }
}

// A second corpus prepared in the first one's vocabulary (data prepare --tokenizer) is scored;
// one with a tokenizer of its own is refused by name.
TEST(Eval, ACorpusOfAnotherTokenizerIsRefusedAndOneInTheSameIsScored) {
  const std::string dir = loco::testing::temp_dir();
  const std::string config = dir + "/config.yaml";
  std::ofstream(config) << loco::testing::small_run_yaml(dir + "/run");
  ASSERT_EQ(run_loco("train --config " + config + " --set train.max_steps=4").exit_code, 0);
  const std::string ckpt = loco::list_checkpoints(dir + "/run/checkpoints").back();
  const std::string& data = loco::testing::prepared_sample();
  const std::string sample = std::string(LOCO_SOURCE_DIR) + "/tests/data/sample.json";

  auto same = run_loco("data prepare --input " + sample + " --out " + dir + "/same --tokenizer " +
                       data + "/tokenizer.model --val-permille 100");
  ASSERT_EQ(same.exit_code, 0) << same.output;
  EXPECT_EQ(read_text(dir + "/same/tokenizer.model"), read_text(data + "/tokenizer.model"));
  auto scored = run_loco("eval --checkpoint " + ckpt + " --data " + dir + "/same");
  EXPECT_EQ(scored.exit_code, 0) << scored.output;
  EXPECT_NE(scored.output.find(dir + "/same/val.bin"), std::string::npos) << scored.output;

  ASSERT_EQ(run_loco("data prepare --input " + sample + " --out " + dir + "/other --vocab-size 300")
                .exit_code,
            0);
  auto refused = run_loco("eval --checkpoint " + ckpt + " --data " + dir + "/other");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find(dir + "/other/tokenizer.model is another tokenizer than the "
                                      "checkpoint's"),
            std::string::npos)
      << refused.output;
}

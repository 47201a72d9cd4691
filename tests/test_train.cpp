// End-to-end tests of `loco train`, `sample` and `bench` as real processes on real files:
// exact resume, divergence handling, bad input, and that a small model learns.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::run_loco;

namespace {

// Small runs over the shipped corpus sample (see test_util.h).
class TrainTest : public ::testing::Test {
 protected:
  // A config file for a small, fast model over the prepared sample, in a fresh directory.
  std::string write_config(const std::string& dir, const std::string& extra = "") {
    std::string path = dir + "/config.yaml";
    std::ofstream(path) << loco::testing::small_run_yaml(dir + "/run") << extra;
    return path;
  }
  const std::string data_dir_ = loco::testing::prepared_sample();
};

std::vector<double> losses(const std::string& metrics_path) {
  std::vector<double> out;
  for (const auto& r : loco::read_metrics(metrics_path)) out.push_back(r.at("loss").get<double>());
  return out;
}

int error_lines(const std::string& output) {
  int n = 0;
  for (size_t p = output.find("error:"); p != std::string::npos; p = output.find("error:", p + 1))
    ++n;
  return n;
}

}  // namespace

class ResumeTest : public TrainTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ResumeTest, InterruptedRunResumesExactly) {
  std::string dir = loco::testing::temp_dir("_" + GetParam());
  std::string optimizer = " --set train.optimizer.name=" + GetParam();
  std::string config = write_config(dir);

  auto whole =
      run_loco("train --config " + config + optimizer + " --set run.dir=" + dir + "/whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;

  // The same run, stopped by a non-finite loss at step 6, then resumed from step 4.
  auto broken = loco::testing::run_command("LOCO_INJECT_NAN_STEP=6 " + std::string(LOCO_BINARY) +
                                           " train --config " + config + optimizer +
                                           " --set run.dir=" + dir + "/parts");
  EXPECT_EQ(broken.exit_code, 1) << broken.output;
  EXPECT_NE(broken.output.find("loss became nan at step 6"), std::string::npos) << broken.output;
  EXPECT_NE(broken.output.find("step_00000004.pt"), std::string::npos) << broken.output;
  EXPECT_EQ(loco::list_checkpoints(dir + "/parts/checkpoints").size(), 1u);
  auto resumed = run_loco("train --config " + config + optimizer + " --set run.dir=" + dir +
                          "/parts --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;

  auto a = losses(dir + "/whole/metrics.jsonl"), b = losses(dir + "/parts/metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b);  // bit for bit, every step
  auto ca = loco::load_checkpoint(dir + "/whole/checkpoints/step_00000008.pt");
  auto cb = loco::load_checkpoint(dir + "/parts/checkpoints/step_00000008.pt");
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (const auto& [name, tensor] : ca.tensors)
    EXPECT_TRUE(torch::equal(tensor, cb.tensors.at(name))) << name;
  EXPECT_EQ(ca.cursor.position, cb.cursor.position);
  EXPECT_EQ(ca.tokens, cb.tokens);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ResumeTest, ::testing::Values("adamw", "muon"));

TEST_F(TrainTest, RunDirectoryHoldsConfigMetricsAndCheckpoints) {
  std::string dir = loco::testing::temp_dir();
  auto r = run_loco("train --config " + write_config(dir) + " --set train.keep_checkpoints=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 8/8"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eta"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("metrics:"), std::string::npos) << r.output;

  auto records = loco::read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(records.size(), 8u);
  for (const auto& rec : records)
    for (const char* key : {"step", "tokens", "loss", "lr", "wall_s"})
      EXPECT_TRUE(rec.contains(key)) << key;
  EXPECT_TRUE(records[3].contains("val_loss"));
  EXPECT_TRUE(records[7].contains("val_bpb"));
  EXPECT_FALSE(records[4].contains("val_loss"));
  EXPECT_EQ(records[7].at("tokens").get<int64_t>(), 8 * 4 * 32);

  auto saved = loco::load_config(dir + "/run/config.yaml");
  EXPECT_EQ(saved.model.n_embd, 64);
  EXPECT_EQ(saved.train.keep_checkpoints, 1);
  auto ckpts = loco::list_checkpoints(dir + "/run/checkpoints");
  ASSERT_EQ(ckpts.size(), 1u);  // pruned to keep_checkpoints
  EXPECT_EQ(fs::path(ckpts[0]).filename(), "step_00000008.pt");
  for (const auto& e : fs::directory_iterator(dir + "/run/checkpoints"))
    EXPECT_EQ(e.path().extension(), ".pt") << "leftover " << e.path();

  auto sample = run_loco("sample --checkpoint " + ckpts[0] + " --prompt 'The film' --max-tokens 8");
  EXPECT_EQ(sample.exit_code, 0) << sample.output;
  EXPECT_EQ(sample.output.rfind("The film", 0), 0u) << sample.output;
  EXPECT_GT(sample.output.size(), std::string("The film\n").size());
}

TEST_F(TrainTest, CorruptCheckpointIsRefusedByName) {
  std::string dir = loco::testing::temp_dir();
  ASSERT_EQ(run_loco("train --config " + write_config(dir)).exit_code, 0);
  std::string path = dir + "/run/checkpoints/step_00000008.pt";
  auto size = fs::file_size(path);
  fs::resize_file(path, size / 2);
  auto r = run_loco("sample --checkpoint " + path + " --prompt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
  EXPECT_EQ(error_lines(r.output), 1) << r.output;
}

TEST_F(TrainTest, BadInputGetsOneLineErrorAndNonZeroExit) {
  std::string dir = loco::testing::temp_dir();
  std::string config = write_config(dir);
  std::string corrupt = dir + "/corrupt.bin";
  fs::copy_file(data_dir_ + "/train.bin", corrupt);
  {
    std::fstream f(corrupt, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  struct Case {
    std::string args, expected;
  };
  std::vector<Case> cases = {
      {"--set model.n_layers=3", "did you mean 'model.n_layer'"},
      {"--set train.max_steps=many", "train.max_steps: expected int, got 'many'"},
      {"--set data.train=/nonexistent/train.bin",
       "data.train: /nonexistent/train.bin: no such file"},
      {"--set data.tokenizer=/nonexistent/tok.model", "data.tokenizer: /nonexistent/tok.model"},
      {"--set model.vocab_size=1024", "vocabulary of 512 but model.vocab_size is 1024"},
      {"--set model.seq_len=100000", "model.seq_len 100000 is longer than data.train"},
      {"--set model.seq_len=4096", "model.seq_len 4096 is longer than data.val"},
      {"--set data.train=" + corrupt, "checksum mismatch"},
      {"--set train.optimizer.name=sgd", "train.optimizer.name: 'sgd' is not one of adamw | muon"},
      {"--set train.device=cuda", "train.device"},
  };
  for (const auto& c : cases) {
    auto r = run_loco("train --config " + config + " " + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(error_lines(r.output), 1) << c.args << "\n" << r.output;
  }
  // A tokenizer whose vocabulary differs from the model's, with shards that agree with the model.
  ASSERT_EQ(run_loco("train --config " + config).exit_code, 0);
  auto again = run_loco("train --config " + config);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("pass --resume"), std::string::npos) << again.output;
  EXPECT_NE(run_loco("train --config /nonexistent.yaml").exit_code, 0);
}

TEST_F(TrainTest, BenchReportsThroughputAndMfu) {
  std::string dir = loco::testing::temp_dir();
  auto r = run_loco("bench train --config " + write_config(dir) + " --steps 2 --warmup 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto json = nlohmann::json::parse(r.output.substr(r.output.rfind('{')));
  EXPECT_GT(json.at("tokens_per_s").get<double>(), 0.0);
  EXPECT_GT(json.at("matmul_peak_gflops").get<double>(), 0.0);
  EXPECT_GT(json.at("mfu").get<double>(), 0.0);
  EXPECT_LT(json.at("mfu").get<double>(), 1.0);
  EXPECT_GT(json.at("peak_mem_mb").get<double>(), 0.0);
}

TEST_F(TrainTest, TinyShapeLearnsOnTheShippedSample) {
  // The tiny config's width and depth (4 layers, 4 heads, 256 wide) with a shorter context so
  // that it runs in a test; the full tiny config on the default corpus is in the README.
  std::string dir = loco::testing::temp_dir();
  std::string config = write_config(dir);
  auto r = run_loco("train --config " + config +
                    " --set model.n_layer=4 --set model.n_head=4 --set model.n_embd=256"
                    " --set model.seq_len=64 --set train.batch_size=8 --set train.max_steps=150"
                    " --set train.eval_every=0 --set train.eval_batches=4"
                    " --set train.checkpoint_every=0 --set train.log_every=50"
                    " --set train.schedule.warmup_steps=10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto records = loco::read_metrics(dir + "/run/metrics.jsonl");
  double uniform = std::log(512.0);
  double val = records.back().at("val_loss").get<double>();
  std::cout << "val loss after 150 steps: " << val << " (uniform: " << uniform << ")\n";
  EXPECT_LT(val, 0.75 * uniform);
  // The sample's val text has more than 2 bytes per token, so uniform guessing costs at most
  // log2(512) / 2 bits per byte.
  EXPECT_LT(records.back().at("val_bpb").get<double>(), 0.75 * std::log2(512.0) / 2.0);
}

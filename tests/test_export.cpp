// After pretraining. `loco export`: a trained checkpoint written as safetensors + config.json +
// tokenizer, read back by an independent Python reader into the golden PyTorch model
// (tests/golden/load_export.py), which reproduces loco's loss on a batch; refusals leave nothing
// half-written. `--init-from`: a second stage starts from a checkpoint's weights with a fresh
// optimizer and schedule, under `loco train` and `loco launch`; another shape is refused by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/export.h"
#include "loco/loader.h"
#include "loco/metrics.h"
#include "loco/trainer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::run_loco;
using loco::testing::run_python;

namespace {

// A run of `steps` steps with `loco train`; returns its newest checkpoint.
std::string trained_checkpoint(const std::string& dir, int steps = 8) {
  const std::string config = dir + "/config.yaml";
  std::ofstream(config) << loco::testing::small_run_yaml(dir + "/run");
  auto r = run_loco("train --config " + config + " --set train.max_steps=" + std::to_string(steps));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto list = loco::list_checkpoints(dir + "/run/checkpoints");
  EXPECT_FALSE(list.empty());
  return list.empty() ? "" : list.back();
}

}  // namespace

TEST(Export, TheGoldenModelReadsTheExportAndReproducesLocosLoss) {
  const std::string dir = loco::testing::temp_dir("export_golden");
  const std::string ckpt = trained_checkpoint(dir);
  ASSERT_FALSE(ckpt.empty());
  auto r = run_loco("export --checkpoint " + ckpt + " --out " + dir + "/hf");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model"})
    EXPECT_TRUE(fs::is_regular_file(dir + "/hf/" + f)) << f;

  // loco's loss on a validation batch of the trained model
  loco::Config config;
  loco::GPT model = loco::load_model(ckpt, torch::kCPU, &config);
  model->eval();
  loco::Batch batch =
      loco::eval_batch(*loco::load_tokens(config.data.val), 0, 3, config.model.seq_len);
  torch::NoGradGuard no_grad;
  auto loss = model->loss(batch.input, batch.target);
  auto dump = loco::testing::make_dict();
  dump.insert("input", batch.input);
  dump.insert("target", batch.target);
  dump.insert("loss", loss);
  const std::string dump_path = dir + "/batch.pt";
  loco::testing::save_dump(dump_path, dump);

  auto py = run_python("tests/golden/load_export.py " + dir + "/hf " + dump_path);
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("export: OK"), std::string::npos) << py.output;

  // The reader notices a wrong weight: perturb one tensor's bytes and it fails.
  const std::string bad = dir + "/hf_bad";
  fs::copy(dir + "/hf", bad);
  {
    std::fstream f(bad + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = f.tellg();
    f.seekp(size - std::streamoff(4 * 64));  // inside lm_head, the last tensor
    const float big = 3.0f;
    for (int i = 0; i < 64; ++i) f.write(reinterpret_cast<const char*>(&big), 4);
  }
  auto wrong = run_python("tests/golden/load_export.py " + bad + " " + dump_path);
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
}

TEST(Export, ANonEmptyDirectoryIsRefusedUnlessForcedAndNothingIsHalfWritten) {
  const std::string dir = loco::testing::temp_dir("export_refuse");
  const std::string ckpt = trained_checkpoint(dir);
  ASSERT_FALSE(ckpt.empty());
  fs::create_directories(dir + "/out");
  std::ofstream(dir + "/out/notes.txt") << "mine";
  auto refused = run_loco("export --checkpoint " + ckpt + " --out " + dir + "/out");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.output.find("is not empty (pass --force"), std::string::npos) << refused.output;
  EXPECT_TRUE(fs::exists(dir + "/out/notes.txt"));

  // A tokenizer that is not there: refused by name, and no directory (nor a partial one) left.
  auto no_tok = run_loco("export --checkpoint " + ckpt + " --out " + dir + "/out2 --tokenizer " +
                         dir + "/missing.model");
  EXPECT_EQ(no_tok.exit_code, 1);
  EXPECT_NE(no_tok.output.find("missing.model"), std::string::npos) << no_tok.output;
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find("out2"), std::string::npos) << e.path();

  auto forced = run_loco("export --checkpoint " + ckpt + " --out " + dir + "/out --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_FALSE(fs::exists(dir + "/out/notes.txt"));
  EXPECT_TRUE(fs::is_regular_file(dir + "/out/model.safetensors"));
}

TEST(Export, SafetensorsHeaderIsAlignedAndOffsetsCoverTheData) {
  const std::string dir = loco::testing::temp_dir("export_format");
  auto a = torch::arange(6, torch::kFloat32).reshape({2, 3});
  auto b = torch::full({5}, 0.5f);
  loco::write_safetensors(dir + "/t.safetensors", {{"a", a}, {"b", b}}, {{"k", "v"}});
  std::ifstream in(dir + "/t.safetensors", std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["k"], "v");
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({24, 44}));
  std::vector<float> data(11);
  in.read(reinterpret_cast<char*>(data.data()), 44);
  EXPECT_EQ(in.gcount(), 44);
  EXPECT_EQ(data[5], 5.0f);
  EXPECT_EQ(data[10], 0.5f);
  EXPECT_EQ(in.peek(), EOF);
}

TEST(InitFrom, ASecondStageStartsFromTheWeightsWithAFreshOptimizerAndSchedule) {
  const std::string dir = loco::testing::temp_dir("init_from_train");
  const std::string ckpt = trained_checkpoint(dir, 40);
  ASSERT_FALSE(ckpt.empty());
  auto r = run_loco("train --config " + dir + "/config.yaml --set run.dir=" + dir +
                    "/stage2 --init-from " + ckpt);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto stage2 = loco::read_metrics(dir + "/stage2/metrics.jsonl");
  auto stage1 = loco::read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_FALSE(stage2.empty());
  // A fresh schedule and step count: step 1 at stage 1's warmup lr.
  EXPECT_EQ(stage2.front().at("step"), 1);
  EXPECT_DOUBLE_EQ(stage2.front().at("lr").get<double>(), stage1.front().at("lr").get<double>());
  // Its first loss is the checkpoint model's on its first batch (the same seed: the same batch),
  // not a random model's (stage 1's first loss).
  loco::Config config;
  loco::GPT model = loco::load_model(ckpt, torch::kCPU, &config);
  loco::DataLoader loader(loco::load_tokens(config.data.train), config.train.batch_size,
                          config.model.seq_len, config.run.seed);
  loco::Batch batch = loader.next();
  double expected;
  {
    torch::NoGradGuard no_grad;
    expected = model->loss(batch.input, batch.target).item<double>();
  }
  EXPECT_NEAR(stage2.front().at("loss").get<double>(), expected, 1e-4);
  EXPECT_LT(expected, stage1.front().at("loss").get<double>() - 0.1);
  // The resolved config records where the weights came from.
  EXPECT_NE(loco::testing::read_text(dir + "/stage2/config.yaml").find(ckpt), std::string::npos);

  // Another architecture is refused by the tensor that differs, before any step.
  auto bad = run_loco("train --config " + dir + "/config.yaml --set run.dir=" + dir +
                      "/stage2b --set model.n_embd=32 --init-from " + ckpt);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("train.init_from: " + ckpt +
                            ": tensor wte.weight has shape [512, 64], "
                            "this model's is [512, 32]"),
            std::string::npos)
      << bad.output;
  EXPECT_FALSE(fs::exists(dir + "/stage2b/metrics.jsonl"));
}

TEST(InitFrom, LaunchStartsADilocoRunFromTheCheckpoint) {
  const std::string dir = loco::testing::temp_dir("init_from_launch");
  const std::string ckpt = trained_checkpoint(dir, 40);
  ASSERT_FALSE(ckpt.empty());
  loco::Config c = loco::testing::process_config(dir + "/diloco", 2, 2, 4);
  const std::string config = loco::testing::write_config(dir, c);
  auto r = run_loco("launch --config " + config + " --init-from " + ckpt);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto stage1 = loco::read_metrics(dir + "/run/metrics.jsonl");
  // Every worker starts from the checkpoint (the coordinator serves it as the initial state):
  // its first loss is well below a random model's.
  for (const char* w : {"worker-0", "worker-1"}) {
    auto m = loco::read_metrics(dir + "/diloco/" + w + "/metrics.jsonl");
    ASSERT_FALSE(m.empty()) << w;
    EXPECT_LT(m.front().at("loss").get<double>(), stage1.front().at("loss").get<double>() - 0.1)
        << w;
  }
  EXPECT_NE(loco::testing::read_text(dir + "/diloco/coordinator/config.yaml").find(ckpt),
            std::string::npos);
}

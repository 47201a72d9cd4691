// Real DiLoCo runs: `loco launch` starting a coordinator and workers as processes on loopback
// (three workers training one model, one worker reproducing single training), its dry run, a
// failing part failing the run, a second launch into a finished run refused, and `loco train`
// refusing a coordinated config. The coordinator's rules in-process are in test_coord.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "replica_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;

namespace {

Config small_config(const std::string& dir, int64_t workers, int64_t inner_steps) {
  return loco::testing::coordinated_config(dir, "diloco", workers, inner_steps);
}

std::string write_yaml(const std::string& dir, const Config& c) {
  return loco::testing::write_config(dir, c);
}

}  // namespace

TEST(Diloco, ThreeRealWorkersTrainOneModel) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 3, 4);
  c.train.max_steps = 16;
  c.train.eval_every = 0;
  // configs/tiny.yaml's lr; 0.01 overshot after round 1 with the Feistel data order (5.84 ->
  // 5.95 over rounds 1-4), so the check of progress measured the lr, not the training.
  c.train.optimizer.lr = 0.003;
  auto r = loco::testing::run_loco("launch --config " + write_yaml(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[coord]"), std::string::npos);
  EXPECT_NE(r.output.find("[w2]"), std::string::npos);

  auto global = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(global.size(), 4u);  // 16 steps / H = 4
  EXPECT_LT(global.back().at("val_loss").get<double>(),
            global.front().at("val_loss").get<double>());
  EXPECT_LT(global.back().at("val_loss").get<double>(), std::log(512.0) - 0.1);
  for (const auto& g : global) EXPECT_EQ(g.at("workers").get<int>(), 3);

  // TensorBoard files beside each metrics.jsonl: the coordinator's rounds and a worker's syncs.
  auto tb = loco::testing::read_tb(dir + "/run/coordinator/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  ASSERT_EQ(tb.json.at("events").size(), 4u);
  for (const char* tag : {"val_loss", "val_bpb", "bytes_up", "bytes_down", "lr"})
    EXPECT_TRUE(tb.json.at("events")[3].at("scalars").contains(tag)) << tag;
  EXPECT_EQ(tb.json.at("events")[3].at("step"), 16);
  tb = loco::testing::read_tb(dir + "/run/worker-0/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  int syncs = 0;
  for (const auto& e : tb.json.at("events"))
    syncs += e.at("scalars").contains("bytes_up") && e.at("scalars").contains("sync_s");
  EXPECT_EQ(syncs, 4);

  // After every sync all three workers hold exactly the same parameters.
  auto checksums = loco::testing::checksums_by_round(dir + "/run", 3);
  ASSERT_EQ(checksums.size(), 4u);
  for (const auto& [round, set] : checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
}

TEST(Diloco, OneWorkerWithPlainOuterStepReproducesSingleTraining) {
  // H = 1, lr = 1, momentum = 0: theta_new = theta_start - (theta_start - theta) = theta.
  std::string dir = loco::testing::temp_dir();
  Config single = small_config(dir + "/single", 1, 1);
  single.sync.mode = Mode::kSingle;
  single.train.max_steps = 6;
  auto a = loco::testing::run_loco("train --config " + write_yaml(dir, single));
  ASSERT_EQ(a.exit_code, 0) << a.output;

  fs::create_directories(dir + "/d");
  Config diloco = small_config(dir + "/diloco", 1, 1);
  diloco.train.max_steps = 6;
  diloco.sync.outer.lr = 1.0, diloco.sync.outer.momentum = 0.0;
  auto b = loco::testing::run_loco("launch --config " + write_yaml(dir + "/d", diloco));
  ASSERT_EQ(b.exit_code, 0) << b.output;

  auto la = read_metrics(dir + "/single/metrics.jsonl");
  auto lb = read_metrics(dir + "/diloco/worker-0/metrics.jsonl");
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), 6u);
  for (size_t i = 0; i < la.size(); ++i)
    EXPECT_NEAR(la[i].at("loss").get<double>(), lb[i].at("loss").get<double>(), 1e-5) << i;
  auto ca = load_checkpoint(dir + "/single/checkpoints/step_00000006.pt");
  auto cb = load_checkpoint(list_checkpoints(dir + "/diloco/coordinator/checkpoints").back());
  EXPECT_TRUE(torch::allclose(ca.tensors.at("params"), cb.tensors.at("params"), 1e-5, 1e-6));
}

TEST(Launch, DryRunPrintsTheCommandsAndAFailingPartFailsTheRun) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 2, 2);
  std::string path = write_yaml(dir, c);
  auto dry = loco::testing::run_loco("launch --config " + path + " --dry-run");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("loco coordinator --config " + path), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("--coordinator " + c.sync.coordinator.address), std::string::npos);
  EXPECT_NE(dry.output.find("worker-1"), std::string::npos);
  // Parts that cannot start fail the launch (given up at once with sync.restart_limit 0; the
  // default, 5 restarts with backoff, takes half a minute: LaunchFaults tests it).
  auto bad =
      loco::testing::run_command(std::string(LOCO_BINARY) + " launch --config " + path +
                                 " --set data.val=/nonexistent.bin --set sync.restart_limit=0");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("launch: failed"), std::string::npos) << bad.output;
}

// A finished 4-round run, then a second `loco launch` into its run.dir with train.max_steps
// halved: refused before any process starts, naming the dir; the first run's files unchanged.
TEST(Launch, ASecondLaunchIntoAFinishedRunIsRefusedBeforeAnythingStarts) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 2, 2);
  c.train.eval_every = 0;  // 8 steps of H = 2: 4 rounds
  std::string path = write_yaml(dir, c);
  auto first = loco::testing::run_loco("launch --config " + path);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::vector<std::string> files = {"coordinator/config.yaml", "coordinator/summary.json",
                                          "coordinator/metrics.jsonl", "worker-0/config.yaml",
                                          "worker-1/metrics.jsonl"};
  std::map<std::string, std::string> before;
  for (const auto& f : files) before[f] = loco::testing::read_text(dir + "/run/" + f);
  EXPECT_NE(before["coordinator/summary.json"].find("\"complete\": true"), std::string::npos);

  auto second = loco::testing::run_loco("launch --config " + path + " --set train.max_steps=4");
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_NE(second.output.find("error: run.dir " + dir +
                               "/run/coordinator (coord) already holds "
                               "checkpoints"),
            std::string::npos)
      << second.output;
  EXPECT_EQ(second.output.find("[coord]"), std::string::npos) << second.output;  // none started
  EXPECT_EQ(second.output.find("[w0]"), std::string::npos) << second.output;
  for (const auto& f : files)
    EXPECT_EQ(loco::testing::read_text(dir + "/run/" + f), before[f]) << f;
  // A worker started by hand into its old run.dir refuses before it joins anything.
  auto worker = loco::testing::run_loco("worker --config " + path + " --set run.dir=" + dir +
                                        "/run/worker-0");
  EXPECT_EQ(worker.exit_code, 1) << worker.output;
  EXPECT_NE(worker.output.find("run.dir " + dir + "/run/worker-0 already holds checkpoints"),
            std::string::npos)
      << worker.output;
  EXPECT_EQ(loco::testing::read_text(dir + "/run/worker-0/config.yaml"),
            before["worker-0/config.yaml"]);
}

TEST(Diloco, TrainRefusesADilocoOrDemoConfigAndSaysWhatToRun) {
  std::string dir = loco::testing::temp_dir();
  for (const char* mode : {"diloco", "demo"}) {
    Config c = small_config(dir + "/run", 2, 2);
    c.sync.mode = mode_from_name(mode);
    c.sync.codec.type = "dct";
    auto r = loco::testing::run_loco("train --config " + write_yaml(dir, c));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("run it with `loco launch`"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir + "/run/metrics.jsonl")) << mode;  // nothing was trained
  }
}

// `loco bench coordinator`: a real coordinator process and simulated workers complete their
// rounds, its peak RSS within the budget; a request beyond the machine's memory is refused in
// one line naming the figure, before any process starts.
TEST(BenchCoordinator, RunsRoundsWithinTheMemoryBudget) {
  std::string dir = loco::testing::temp_dir();
  auto r = loco::testing::run_loco(
      "bench coordinator --params 300000 --workers 3 --rounds 2 "
      "--dir " +
      dir + "/bench");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto at = r.output.find("json: ");
  ASSERT_NE(at, std::string::npos) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(at + 6, r.output.find('\n', at) - at - 6));
  EXPECT_EQ(j.at("workers").get<int>(), 3);
  EXPECT_GT(j.at("round_gbps").get<double>(), 0);
  EXPECT_TRUE(j.at("within_bound").get<bool>()) << r.output;
  auto metrics = read_metrics(dir + "/bench/coordinator/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[1].at("workers").get<int>(), 3);
}

TEST(BenchCoordinator, RefusesMoreMemoryThanTheMachineHas) {
  std::string dir = loco::testing::temp_dir();
  auto r = loco::testing::run_loco("bench coordinator --params 4000000000000 --workers 2 --dir " +
                                   dir + "/bench");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("MemAvailable"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("needs about"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/bench"));  // refused before any work
}

// MuLoCo (issue 21) is Muon as the inner optimizer with a compressing codec: Muon inside every
// method, with every codec DiLoCo takes. Each run: 2 workers, 2 rounds of 2 steps, through
// `loco launch`; it completes, the coordinator's last val loss is finite, and where the replicas
// are one model (diloco, streaming) every worker holds the same parameters after every sync.
TEST(MuLoCo, MuonInsideRunsWithEveryCodecAndMethod) {
  struct Case {
    std::string mode, codec, transform, values;
  };
  const std::vector<Case> cases = {
      {"diloco", "none", "dct", "int8"}, {"diloco", "fp16", "dct", "int8"},
      {"diloco", "bf16", "dct", "int8"}, {"diloco", "int8", "dct", "int8"},
      {"diloco", "int4", "dct", "int8"}, {"diloco", "int2", "dct", "int8"},
      {"diloco", "dct", "dct", "int8"},  {"diloco", "dct", "none", "int2"},
      {"demo", "dct", "dct", "int4"},    {"streaming", "int4", "dct", "int8"}};
  for (const auto& k : cases) {
    const std::string name = k.mode + "-" + k.codec + "-" + k.transform + "-" + k.values;
    SCOPED_TRACE(name);
    std::string dir = loco::testing::temp_dir(name);
    Config c = loco::testing::coordinated_config(dir + "/run", k.mode, 2, 2);
    c.train.optimizer.name = "muon";
    c.train.max_steps = 4;
    c.train.eval_every = 0;
    c.sync.codec.type = k.codec, c.sync.codec.transform = k.transform;
    c.sync.codec.values = k.values;
    if (k.mode == "streaming") c.sync.streaming = {2, 0, 0.5}, c.sync.inner_steps = 4;
    auto r = loco::testing::run_loco("launch --config " + write_yaml(dir, c));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto summary = nlohmann::json::parse(std::ifstream(dir + "/run/coordinator/summary.json"));
    EXPECT_TRUE(summary.at("complete").get<bool>());
    EXPECT_TRUE(std::isfinite(summary.at("final_val_loss").get<double>()));
    if (k.mode == "demo") continue;
    auto checksums = loco::testing::checksums_by_round(dir + "/run", 2);
    EXPECT_EQ(checksums.size(), 2u);
    for (const auto& [round, set] : checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
  }
}

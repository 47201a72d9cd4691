// Tests of DiLoCo: the outer step against LibTorch's SGD, the coordinator's rules (weighted
// average, refusals that change nothing), the real gRPC service, and real multi-process runs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <typeinfo>

#include "loco/checkpoint.h"
#include "loco/coord_client.h"
#include "loco/coord_service.h"
#include "loco/coordinator.h"
#include "loco/diloco.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;

namespace {

Config small_config(const std::string& dir, int64_t workers, int64_t inner_steps) {
  return loco::testing::coordinated_config(dir, "diloco", workers, inner_steps);
}

// An update with every tensor equal to `value`, encoded with the "none" codec.
Update constant_update(const CoordinatorCore& core, const std::string& worker, int64_t round,
                       int64_t tokens, float value) {
  auto codec = make_codec(CodecConfig{});
  Update u;
  u.worker_id = worker, u.round = round, u.tokens = tokens, u.loss = 1.0;
  for (const auto& l : core.layout()) {
    TensorPayload t;
    t.name = l.name;
    t.encoded = codec->encode(torch::full(l.shape, value));
    u.tensors.push_back(t);
  }
  return u;
}

using loco::testing::refusal;

std::string write_yaml(const std::string& dir, const Config& c) {
  return loco::testing::write_config(dir, c);
}

}  // namespace

TEST(OuterNesterov, MatchesTorchSgdWithNesterov) {
  torch::manual_seed(0);
  auto theta = torch::randn({50});
  auto reference = theta.clone().requires_grad_(true);
  torch::optim::SGD sgd({reference}, torch::optim::SGDOptions(0.7).momentum(0.9).nesterov(true));
  OuterNesterov outer(0.7, 0.9, theta);
  for (int step = 0; step < 5; ++step) {
    auto delta = torch::randn({50});
    outer.step(theta, delta);
    reference.mutable_grad() = delta.clone();
    sgd.step();
    ASSERT_TRUE(torch::allclose(theta, reference.detach(), 1e-6, 1e-6)) << "step " << step;
  }
}

// One strategy class per sync.mode, chosen by the factory; a mode without a coordinator is a
// configuration error that names sync.mode. Nothing here touches the (absent) client.
TEST(CoordinatedSync, FactoryPicksTheClassOfTheMode) {
  Config c = small_config(loco::testing::temp_dir() + "/run", 1, 2);
  const std::pair<Mode, std::string> classes[] = {{Mode::kDiloco, "DilocoSync"},
                                                  {Mode::kDemo, "DemoSync"}};
  for (const auto& [mode, name] : classes) {
    c.sync.mode = mode;
    c.sync.codec.type = mode == Mode::kDemo ? "dct" : "none";
    auto sync = make_coordinated_sync(c, nullptr, JoinInfo{});
    ASSERT_TRUE(sync) << mode_name(mode);
    const Sync& s = *sync;
    EXPECT_NE(std::string(typeid(s).name()).find(name), std::string::npos)
        << mode_name(mode) << " made " << typeid(s).name();
  }
  for (Mode mode : {Mode::kSingle, Mode::kDdp}) {
    c.sync.mode = mode;
    try {
      make_coordinated_sync(c, nullptr, JoinInfo{});
      ADD_FAILURE() << mode_name(mode) << " made a coordinated strategy";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("sync.mode is '" + std::string(mode_name(mode))),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(CoordinatorCore, AveragesByTokensAndAppliesTheOuterStep) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 2, 2);
  c.sync.outer.lr = 0.5, c.sync.outer.momentum = 0.9;
  CoordinatorCore core(c, false);
  auto a = core.join("a", 0 + core.layout().back().offset + core.layout().back().numel);
  auto b = core.join("b", core.layout().back().offset + core.layout().back().numel);
  EXPECT_NE(a.shard, b.shard);
  double wait = 0;
  auto before = core.wait_state(a.worker_id, 0, 1.0, &wait).second;
  core.push(constant_update(core, a.worker_id, 0, 100, 1.0f), 1);
  EXPECT_EQ(core.round(), 0);  // b has not reported yet
  core.push(constant_update(core, b.worker_id, 0, 300, 2.0f), 1);
  EXPECT_EQ(core.round(), 1);
  auto after = core.wait_state(a.worker_id, 1, 1.0, &wait).second;
  // delta = (100 * 1 + 300 * 2) / 400 = 1.75; v = delta; theta -= 0.5 * (delta + 0.9 v)
  auto expected = before - 0.5 * (1.75 + 0.9 * 1.75);
  EXPECT_TRUE(torch::allclose(after, expected, 1e-6, 1e-6));
  core.drain();  // evaluation runs on its own thread
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0].at("round_tokens").get<int64_t>(), 400);
  EXPECT_TRUE(metrics[0].contains("val_loss"));
}

TEST(CoordinatorCore, ResumeKeepsTheMetricsOfCheckpointedRounds) {
  // Metrics records are keyed by step = round * inner_steps, checkpoints by round.
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 1, 2);
  c.sync.coordinator.checkpoint_every = 1;
  {
    CoordinatorCore core(c, false);
    auto a = core.join("a", core.layout().back().offset + core.layout().back().numel);
    for (int64_t round = 0; round < 2; ++round)
      core.push(constant_update(core, a.worker_id, round, 100, 0.01f), 1);
    core.drain();
  }
  ASSERT_EQ(read_metrics(dir + "/run/metrics.jsonl").size(), 2u);
  CoordinatorCore resumed(c, true);
  EXPECT_EQ(resumed.round(), 2);
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[1].at("step").get<int64_t>(), 4);
  auto tb = loco::testing::read_tb(dir + "/run/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  ASSERT_EQ(tb.json.at("events").size(), 2u);
  EXPECT_EQ(tb.json.at("events")[1].at("step"), 4);
  EXPECT_TRUE(tb.json.at("events")[1].at("scalars").contains("val_loss"));
}

// The failure mode of issue 19: a fresh coordinator in an older run's run.dir would write its
// round-1 checkpoint among the old run's (pruning keeps the highest steps: the old run's), so a
// later --resume would restore the old run. Refused, and nothing there is touched.
TEST(CoordinatorCore, RefusesARunDirHoldingCheckpointsWithoutResumeAndTouchesNothing) {
  std::string dir = loco::testing::temp_dir();
  const std::string run = dir + "/run";
  fs::create_directories(run + "/checkpoints");
  const std::map<std::string, std::string> before = {
      {"config.yaml", "train: {max_steps: 80}\n"},
      {"metrics.jsonl", "{\"step\": 40, \"round\": 1}\n"},
      {"summary.json", "{\"complete\": true, \"bytes_up\": 1234}\n"},
      {"checkpoints/step_00000020.pt", "the earlier run's"}};
  for (const auto& [name, text] : before) std::ofstream(run + "/" + name) << text;
  Config c = small_config(run, 1, 2);
  std::string error = loco::testing::config_error([&] { CoordinatorCore core(c, false); });
  EXPECT_NE(error.find("run.dir " + run + " already holds checkpoints"), std::string::npos)
      << error;
  EXPECT_NE(error.find("pass --resume"), std::string::npos) << error;
  for (const auto& [name, text] : before)
    EXPECT_EQ(loco::testing::read_text(run + "/" + name), text) << name;
  EXPECT_FALSE(fs::exists(run + "/tb"));  // no metrics writer was opened
  EXPECT_EQ(list_checkpoints(run + "/checkpoints").size(), 1u);
  // --resume in a run.dir without checkpoints says so.
  Config empty = small_config(dir + "/empty", 1, 2);
  error = loco::testing::config_error([&] { CoordinatorCore core(empty, true); });
  EXPECT_NE(error.find("--resume: no checkpoint in " + dir + "/empty/checkpoints"),
            std::string::npos)
      << error;
}

TEST(CoordinatorCore, RefusesBadUpdatesWithoutTouchingTheRound) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 1, 2);
  c.sync.outer.lr = 1.0, c.sync.outer.momentum = 0.0;
  c.sync.coordinator.max_update_mb = 1;
  CoordinatorCore core(c, false);
  int64_t n = core.layout().back().offset + core.layout().back().numel;
  EXPECT_EQ(refusal([&] { core.join("x", n + 1); }), CoordError::kInvalidArgument);
  auto w = core.join("w", n);
  double wait = 0;
  auto before = core.wait_state(w.worker_id, 0, 1.0, &wait).second;

  EXPECT_EQ(refusal([&] { core.push(constant_update(core, "nobody", 0, 10, 1.0f), 1); }),
            CoordError::kNotFound);
  EXPECT_EQ(refusal([&] { core.push(constant_update(core, w.worker_id, 1, 10, 1.0f), 1); }),
            CoordError::kFailedPrecondition);
  auto renamed = constant_update(core, w.worker_id, 0, 10, 1.0f);
  renamed.tensors[1].name = "blocks.9.attn.c_q.weight";
  EXPECT_EQ(refusal([&] { core.push(renamed, 1); }), CoordError::kInvalidArgument);
  auto reshaped = constant_update(core, w.worker_id, 0, 10, 1.0f);
  reshaped.tensors[0].encoded.shape = {1, 2, 3};
  EXPECT_EQ(refusal([&] { core.push(reshaped, 1); }), CoordError::kInvalidArgument);
  auto retyped = constant_update(core, w.worker_id, 0, 10, 1.0f);
  retyped.tensors[2].dtype = "float16";
  EXPECT_EQ(refusal([&] { core.push(retyped, 1); }), CoordError::kInvalidArgument);
  // The last tensor is valid up to its final bytes: nothing of the earlier ones may stick.
  auto truncated = constant_update(core, w.worker_id, 0, 10, 5.0f);
  truncated.tensors.back().encoded.payload.resize(7);
  EXPECT_EQ(refusal([&] { core.push(truncated, 1); }), CoordError::kInvalidArgument);
  auto poisoned = constant_update(core, w.worker_id, 0, 10, 1.0f);
  const uint32_t nan_bits = 0x7fc00000u;  // the codec refuses to encode NaN: poison the wire
  std::memcpy(&poisoned.tensors[3].encoded.payload.back() - 3, &nan_bits, 4);
  EXPECT_EQ(refusal([&] { core.push(poisoned, 1); }), CoordError::kInvalidArgument);
  EXPECT_EQ(
      refusal([&] { core.check_header(constant_update(core, w.worker_id, 0, 10, 0.f), 2u << 20); }),
      CoordError::kResourceExhausted);
  EXPECT_EQ(core.round(), 0);

  core.push(constant_update(core, w.worker_id, 0, 10, 0.25f), 1);  // a good one closes it
  EXPECT_EQ(core.round(), 1);
  auto after = core.wait_state(w.worker_id, 1, 1.0, &wait).second;
  EXPECT_TRUE(torch::allclose(after, before - 0.25, 1e-6, 1e-6));
  EXPECT_EQ(refusal([&] { core.push(constant_update(core, w.worker_id, 0, 10, 1.0f), 1); }),
            CoordError::kFailedPrecondition);  // stale
}

// Issue #8: truncated, extended, oversized and random payloads are refused under every codec the
// coordinator may run with, nothing of them sticks, and the coordinator goes on closing rounds.
TEST(CoordinatorCore, EveryCodecRefusesTruncatedOversizedAndRandomPayloads) {
  for (const char* type : {"none", "fp16", "bf16", "int8", "dct"}) {
    SCOPED_TRACE(type);
    std::string dir = loco::testing::temp_dir(std::string("_") + type);
    Config c = small_config(dir + "/run", 1, 2);
    c.sync.codec.type = type;
    c.sync.coordinator.max_update_mb = 1;
    CoordinatorCore core(c, false);
    auto w = core.join("w", core.layout().back().offset + core.layout().back().numel);
    auto codec = make_codec(c.sync.codec);
    auto good = [&] {
      Update u;
      u.worker_id = w.worker_id, u.round = 0, u.tokens = 10;
      for (const auto& l : core.layout())
        u.tensors.push_back({l.name, "float32", codec->encode(torch::randn(l.shape))});
      return u;
    };
    std::mt19937 gen(7);
    auto random_bytes = [&](size_t n) {
      std::string s(n, '\0');
      for (char& ch : s) ch = char(gen());
      return s;
    };
    for (int trial = 0; trial < 20; ++trial) {
      auto u = good();
      auto& payload = u.tensors[size_t(trial) % u.tensors.size()].encoded.payload;
      if (trial % 4 == 0) payload.resize(gen() % payload.size());   // truncated
      if (trial % 4 == 1) payload += random_bytes(1 + gen() % 16);  // extended
      if (trial % 4 == 2) payload = random_bytes(gen() % 256);      // random
      if (trial % 4 == 3) payload.replace(4, std::string::npos, random_bytes(gen() % 4096));
      EXPECT_EQ(refusal([&] { core.push(u, 1); }), CoordError::kInvalidArgument) << trial;
    }
    auto oversized = good();
    oversized.tensors[0].encoded.payload += random_bytes(size_t(1) << 20);
    EXPECT_EQ(refusal([&] { core.push(oversized, 1); }), CoordError::kResourceExhausted);
    core.tick();
    EXPECT_EQ(core.round(), 0);
    EXPECT_FALSE(core.status().members[0].reported);
    core.push(good(), 1);  // still up: a good push closes the round
    EXPECT_EQ(core.round(), 1);
  }
}

TEST(CoordinatorService, RealServerRefusesBadPushesAndKeepsServing) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 1, 2);
  c.train.max_steps = 2;  // one round
  std::atomic<bool> stop{false};
  std::thread server([&] { run_coordinator(c, false, stop); });
  CoordinatorClient client(c.sync.coordinator.address, c.sync.coordinator);
  GPT model(c.model);
  int64_t n = model->num_params();
  JoinInfo join = client.join("test", n);
  auto layout = loco::testing::model_layout(c);
  auto update = [&](int64_t round) { return loco::testing::zero_update(layout, round); };
  auto message_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(message_of([&] { client.push(update(3)); }).find("FAILED_PRECONDITION"),
            std::string::npos);
  auto bad = update(0);
  bad.tensors[0].encoded.shape = {7};
  EXPECT_NE(message_of([&] { client.push(bad); }).find("INVALID_ARGUMENT"), std::string::npos);
  CoordinatorClient stranger(c.sync.coordinator.address, c.sync.coordinator);
  EXPECT_NE(message_of([&] { stranger.push(update(0)); }).find("NOT_FOUND"), std::string::npos);

  EXPECT_GT(client.push(update(0)), uint64_t(n) * 4);  // fp32 payload plus framing
  auto pulled = torch::empty({n});
  PullResult r = client.pull(1, layout, pulled, 30);
  EXPECT_EQ(r.round, 1);
  EXPECT_GT(r.wire_bytes, uint64_t(n) * 4);
  client.leave();
  server.join();  // the only round is done and the only worker left: the server stops by itself
  EXPECT_FALSE(loco::list_checkpoints(dir + "/run/checkpoints").empty());
}

TEST(Diloco, ThreeRealWorkersTrainOneModel) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 3, 4);
  c.train.max_steps = 16;
  c.train.eval_every = 0;
  c.train.optimizer.lr = 0.01;
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
  std::map<int64_t, std::set<uint64_t>> checksums;
  for (int k = 0; k < 3; ++k)
    for (const auto& rec :
         read_metrics(dir + "/run/worker-" + std::to_string(k) + "/metrics.jsonl"))
      if (rec.contains("param_checksum"))
        checksums[rec.at("round").get<int64_t>()].insert(rec.at("param_checksum").get<uint64_t>());
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

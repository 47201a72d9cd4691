// Tests of DiLoCo in one process: the outer step against LibTorch's SGD, the coordinator's rules
// (weighted average, refusals that change nothing) and the real gRPC service on a thread. Real
// multi-process runs (`loco launch`) are in test_diloco.cpp.
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

// Two rounds of one worker pushing 100 tokens, checkpointed and logged, then the core is gone.
void run_two_rounds(const Config& c) {
  CoordinatorCore core(c, false);
  auto a = core.join("a", core.layout().back().offset + core.layout().back().numel);
  for (int64_t round = 0; round < 2; ++round)
    core.push(constant_update(core, a.worker_id, round, 100, 0.01f), 1);
  core.drain();
}

using loco::testing::refusal;

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
  run_two_rounds(c);
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

// A coordinator killed after a round's checkpoint but before its metrics record (the evaluation
// thread writes it after the round was served) would leave that round unlogged for good: the
// restart evaluates it again from its checkpoint, and every round is logged once.
TEST(CoordinatorCore, ResumeLogsARoundThatWasCheckpointedButNotLogged) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 1, 2);
  c.sync.coordinator.checkpoint_every = 1;
  run_two_rounds(c);
  auto before = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(before.size(), 2u);
  std::ofstream(dir + "/run/metrics.jsonl") << before[0].dump() << "\n";  // round 2's is lost
  {
    CoordinatorCore resumed(c, true);
    resumed.drain();
  }
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[1].at("round").get<int64_t>(), 2);
  EXPECT_TRUE(metrics[1].value("relogged", false));
  EXPECT_EQ(metrics[1].at("round_tokens").get<int64_t>(), 100);
  EXPECT_EQ(metrics[1].at("tokens").get<int64_t>(), before[1].at("tokens").get<int64_t>());
  EXPECT_DOUBLE_EQ(metrics[1].at("val_loss").get<double>(), before[1].at("val_loss").get<double>());
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

// No pull copies the global state: every pull of a round shares its parameters (and velocity),
// and the next close steps a copy, leaving what a pull still holds as it was.
TEST(CoordinatorCore, PullsShareOneStateAndACloseStepsACopy) {
  std::string dir = loco::testing::temp_dir();
  CoordinatorCore core(small_config(dir + "/run", 1, 2), false);
  const int64_t n = core.num_params();
  auto a = core.join("a", n);
  double wait = 0;
  Download first = core.wait_download(a.worker_id, PullKind::kParams, 0, true, 1.0, &wait);
  Download second = core.wait_download(a.worker_id, PullKind::kParams, 0, true, 1.0, &wait);
  ASSERT_EQ(first.params.numel(), n);
  ASSERT_EQ(first.velocity.numel(), n);
  EXPECT_EQ(first.params.data_ptr(), second.params.data_ptr());
  EXPECT_EQ(first.velocity.data_ptr(), second.velocity.data_ptr());
  auto values = first.params.clone();
  auto velocity = first.velocity.clone();
  core.push(constant_update(core, a.worker_id, 0, 100, 0.5f), 1);
  Download next = core.wait_download(a.worker_id, PullKind::kParams, 1, true, 1.0, &wait);
  EXPECT_NE(next.params.data_ptr(), first.params.data_ptr());
  EXPECT_TRUE(torch::equal(first.params, values));  // what was being streamed stays intact
  EXPECT_TRUE(torch::equal(first.velocity, velocity));
  EXPECT_FALSE(torch::equal(next.params, values));
  EXPECT_TRUE(torch::allclose(next.velocity, torch::full({n}, 0.5f)));
  core.drain();
}

// A pull waiting for a round nobody will close returns at once when the coordinator stops (the
// server's shutdown waits for its handlers: a pull left to its timeout held a stopping
// coordinator for minutes), and one for a round past the run's last is refused at once.
TEST(CoordinatorCore, APullForARoundThatWillNotComeReturnsAtOnce) {
  std::string dir = loco::testing::temp_dir();
  CoordinatorCore core(small_config(dir + "/run", 2, 2), false);  // two workers
  const int64_t n = core.num_params();
  auto a = core.join("a", n);
  core.join("b", n);
  auto start = std::chrono::steady_clock::now();
  std::string error;
  std::thread waiting([&] {
    try {
      double wait = 0;
      core.wait_download(a.worker_id, PullKind::kParams, 1, false, 60.0, &wait);
    } catch (const CoordError& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  core.stop_waiting();
  waiting.join();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 10);
  EXPECT_NE(error.find("the coordinator is stopping"), std::string::npos) << error;
  // Round 1 is the run's last: a pull for round 2 can never be served.
  Config last = small_config(dir + "/one", 1, 2);
  last.train.max_steps = 2;  // one round of 2 steps
  CoordinatorCore one(last, false);
  auto w = one.join("w", n);
  one.push(constant_update(one, w.worker_id, 0, 100, 0.5f), 1);
  start = std::chrono::steady_clock::now();
  try {
    double wait = 0;
    one.wait_download(w.worker_id, PullKind::kParams, 2, false, 60.0, &wait);
    ADD_FAILURE() << "a pull past the last round was served";
  } catch (const CoordError& e) {
    EXPECT_EQ(e.code, CoordError::kFailedPrecondition);
    EXPECT_NE(std::string(e.what()).find("the run ended at round 1"), std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10);
  one.drain();
}

// With sync.coordinator.evaluate off the coordinator reads neither data.val nor the tokenizer,
// and logs its rounds without a validation loss.
TEST(CoordinatorCore, WithoutEvaluationNeedsNoDataAndLogsNoValLoss) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", 1, 2);
  c.sync.coordinator.evaluate = false;
  c.data.val = dir + "/missing.bin";
  c.data.tokenizer = dir + "/missing.model";
  CoordinatorCore core(c, false);
  auto a = core.join("a", core.num_params());
  core.push(constant_update(core, a.worker_id, 0, 100, 0.01f), 1);
  core.drain();
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0].at("round").get<int64_t>(), 1);
  EXPECT_FALSE(metrics[0].contains("val_loss"));
  c.sync.coordinator.evaluate = true;  // and with it on, the missing file is named
  EXPECT_THROW(CoordinatorCore(c, false), ConfigError);
}

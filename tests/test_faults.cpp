// Tests of faults and elastic membership: the coordinator's membership rules (late joiners, a
// worker that restarts, lapsed leases, the straggler deadline, checkpoints before a round's state
// is served), availability schedules, and real processes killed with real signals: a worker, the
// coordinator, and a schedule replayed by `loco launch`.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "loco/checkpoint.h"
#include "loco/coord_client.h"
#include "loco/coordinator.h"
#include "loco/metrics.h"
#include "loco/schedule.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;
using loco::testing::process_config;
using loco::testing::read_text;
using loco::testing::refusal;
using loco::testing::spawn_shell;
using loco::testing::wait_exit;
using loco::testing::wait_until;

namespace {

int64_t num_params(const CoordinatorCore& core) {
  return core.layout().back().offset + core.layout().back().numel;
}

// An update with every tensor equal to `value` ("none" codec).
Update constant_update(const CoordinatorCore& core, const std::string& worker, int64_t round,
                       int64_t tokens, float value = 0.01f) {
  auto codec = make_codec(CodecConfig{});
  Update u;
  u.worker_id = worker, u.round = round, u.tokens = tokens, u.loss = 1.0;
  for (const auto& l : core.layout())
    u.tensors.push_back({l.name, "float32", codec->encode(torch::full(l.shape, value))});
  return u;
}

std::vector<std::string> members_of(const nlohmann::json& record) {
  return record.at("members").get<std::vector<std::string>>();
}

std::vector<nlohmann::json> metrics_of(const std::string& path) {
  return fs::exists(path) ? read_metrics(path) : std::vector<nlohmann::json>{};
}

// The highest round the coordinator logged in its metrics so far.
int64_t logged_round(const std::string& coordinator_dir) {
  int64_t round = 0;
  for (const auto& r : metrics_of(coordinator_dir + "/metrics.jsonl"))
    if (r.contains("round")) round = std::max(round, r.at("round").get<int64_t>());
  return round;
}

std::string loco_cmd(const std::string& args) {
  return std::string(LOCO_BINARY) + " " + args;
}

std::string worker_cmd(const std::string& config, const std::string& dir, const std::string& name) {
  return loco_cmd("worker --config " + config + " --name " + name + " --set run.dir=" + dir +
                  "/worker-" + name);
}

// A coordinator and one worker per name as separate processes of `config`, logs in `dir`.
struct Processes {
  pid_t coordinator;
  std::vector<pid_t> workers;
};
Processes start_run(const std::string& config, const std::string& dir,
                    const std::vector<std::string>& names) {
  Processes p;
  p.coordinator = spawn_shell(loco_cmd("coordinator --config " + config), dir + "/coord.log");
  for (const auto& name : names)
    p.workers.push_back(spawn_shell(worker_cmd(config, dir, name), dir + "/" + name + ".log"));
  return p;
}

}  // namespace

TEST(Membership, ALateJoinerTakesPartFromTheNextRoundAndReadsOnFromItsShardsCursor) {
  std::string dir = loco::testing::temp_dir();
  CoordinatorCore core(loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2), false);
  auto a = core.join("a", num_params(core));
  auto b = core.join("b", num_params(core));
  EXPECT_EQ(a.round, 0);
  EXPECT_EQ(b.round, 0);
  EXPECT_EQ(a.cursor_tokens, 0);
  core.push(constant_update(core, "a", 0, 100), 1);
  core.push(constant_update(core, "b", 0, 300), 1);
  ASSERT_EQ(core.round(), 1);
  core.leave("a");
  // c comes in the middle of round 1: it takes part from round 2, on a's shard, where a stopped.
  auto c = core.join("c", num_params(core));
  EXPECT_EQ(c.round, 2);
  EXPECT_EQ(c.shard, a.shard);
  EXPECT_EQ(c.cursor_tokens, 100);
  EXPECT_EQ(refusal([&] { core.push(constant_update(core, "c", 1, 100), 1); }),
            CoordError::kFailedPrecondition);
  core.push(constant_update(core, "b", 1, 300), 1);  // b alone is everyone taking part in round 1
  ASSERT_EQ(core.round(), 2);
  core.push(constant_update(core, "c", 2, 100), 1);
  EXPECT_EQ(core.round(), 2);  // now c takes part: the round waits for b too
  core.push(constant_update(core, "b", 2, 300), 1);
  EXPECT_EQ(core.round(), 3);
  core.drain();
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(members_of(metrics[0]), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(members_of(metrics[1]), (std::vector<std::string>{"b"}));
  EXPECT_EQ(members_of(metrics[2]), (std::vector<std::string>{"b", "c"}));
}

TEST(Membership, TheSameNameJoiningAgainReplacesTheMemberAndKeepsItsShard) {
  std::string dir = loco::testing::temp_dir();
  CoordinatorCore core(loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2), false);
  auto a = core.join("a", num_params(core));
  core.join("b", num_params(core));
  EXPECT_EQ(refusal([&] { core.join("c", num_params(core)); }), CoordError::kResourceExhausted);
  auto again = core.join("a", num_params(core));  // a restarted before its lease lapsed
  EXPECT_EQ(again.worker_id, "a");
  EXPECT_EQ(again.shard, a.shard);
  EXPECT_EQ(again.round, 0);  // no round closed yet: everyone starts together
  EXPECT_EQ(core.status().members.size(), 2u);
  // Once the old session pushed, the new one cannot push the same round twice.
  core.push(constant_update(core, "a", 0, 100), 1);
  auto third = core.join("a", num_params(core));
  EXPECT_EQ(third.round, 1);
  core.push(constant_update(core, "b", 0, 100), 1);
  EXPECT_EQ(core.round(), 1);
}

TEST(Membership, ARoundClosesWithoutAMemberWhoseLeaseLapsed) {
  std::string dir = loco::testing::temp_dir();
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2);
  c.sync.coordinator.heartbeat_s = 0.05, c.sync.coordinator.lease_s = 0.3;
  CoordinatorCore core(c, false);
  core.join("a", num_params(core));
  core.join("b", num_params(core));
  core.push(constant_update(core, "a", 0, 100), 1);
  core.push(constant_update(core, "b", 0, 100), 1);
  core.push(constant_update(core, "a", 1, 100), 1);
  core.tick();
  EXPECT_EQ(core.round(), 1);  // b is alive (its lease holds): the round waits
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  core.heartbeat("a");
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  core.tick();  // b has been silent for 0.4 s > lease_s
  EXPECT_EQ(core.round(), 2);
  EXPECT_EQ(core.status().members.size(), 1u);
  core.drain();
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(members_of(metrics[1]), (std::vector<std::string>{"a"}));
  EXPECT_EQ(metrics[1].at("live").get<int>(), 1);
}

TEST(Straggler, AnAdaptiveDeadlineClosesTheRoundWithoutTheLateWorkerAndAFixedOneWaits) {
  for (std::string policy : {"adaptive", "fixed"}) {
    SCOPED_TRACE(policy);
    std::string dir = loco::testing::temp_dir(policy);
    Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2);
    c.train.max_steps = 20;
    c.sync.coordinator.straggler = policy;
    c.sync.coordinator.straggler_factor = 3;
    c.sync.coordinator.straggler_min_s = 0.3;
    c.sync.coordinator.round_timeout_s = 30;
    CoordinatorCore core(c, false);
    core.join("a", num_params(core));
    core.join("b", num_params(core));
    for (int64_t round = 0; round < 3; ++round) {  // both arrive together: spreads near 0
      core.push(constant_update(core, "a", round, 100), 1);
      core.push(constant_update(core, "b", round, 100), 1);
    }
    ASSERT_EQ(core.round(), 3);
    core.push(constant_update(core, "a", 3, 100), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    core.tick();
    if (policy == "adaptive") {
      EXPECT_EQ(core.round(), 4);  // deadline max(0.3 s, 3 x ~0 s) passed
      EXPECT_EQ(refusal([&] { core.push(constant_update(core, "b", 3, 100), 1); }),
                CoordError::kFailedPrecondition);
      core.drain();
      auto metrics = read_metrics(dir + "/run/metrics.jsonl");
      EXPECT_NEAR(metrics.back().at("deadline_s").get<double>(), 0.3, 1e-9);
      EXPECT_EQ(members_of(metrics.back()), (std::vector<std::string>{"a"}));
    } else {
      EXPECT_EQ(core.round(), 3);  // 30 s not reached
      core.push(constant_update(core, "b", 3, 100), 1);
      EXPECT_EQ(core.round(), 4);
    }
  }
}

TEST(Durability, ARoundsCheckpointIsOnDiskBeforeItsStateIsServedAndKeepsTheShardCursors) {
  std::string dir = loco::testing::temp_dir();
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2);
  int32_t shard_a = -1, shard_b = -1;
  {
    CoordinatorCore core(c, false);
    auto a = core.join("a", num_params(core));
    auto b = core.join("b", num_params(core));
    shard_a = a.shard, shard_b = b.shard;
    core.push(constant_update(core, "a", 0, 128), 1);
    core.push(constant_update(core, "b", 0, 256), 1);
    // No drain: the checkpoint of round 1 exists as soon as the round can be pulled.
    auto found = list_checkpoints(dir + "/run/checkpoints");
    ASSERT_EQ(found.size(), 1u);
    Checkpoint ck = load_checkpoint(found.back());
    EXPECT_EQ(ck.step, 1);
    double wait = 0;
    EXPECT_TRUE(torch::equal(ck.tensors.at("params"), core.wait_state("a", 1, 1, &wait).second));
    EXPECT_EQ(ck.tensors.at("shard_tokens")[a.shard].item<int64_t>(), 128);
    EXPECT_EQ(ck.tensors.at("shard_tokens")[b.shard].item<int64_t>(), 256);
  }
  // A restarted coordinator: everyone rejoins for the checkpointed round, asking for its own
  // shard (in any order), and reads on where that shard stopped.
  CoordinatorCore resumed(c, true);
  EXPECT_EQ(resumed.round(), 1);
  auto b = resumed.join("b", num_params(resumed), shard_b);
  auto a = resumed.join("a", num_params(resumed), shard_a);
  EXPECT_EQ(a.round, 1);
  EXPECT_EQ(b.round, 1);
  EXPECT_EQ(a.shard, shard_a);
  EXPECT_EQ(b.shard, shard_b);
  EXPECT_EQ(a.cursor_tokens, 128);
  EXPECT_EQ(b.cursor_tokens, 256);
}

TEST(Schedule, WindowsInRoundsSecondsAndACsvTrace) {
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/solar.csv") << "hour,surplus_mw\n0,0\n1,2.5\n2,3\n3,0\n4,1\n";
  Schedule s = Schedule::parse(
      "w1: {rounds: [[0, 2], [5, 8]]}\n"
      "w2: {seconds: [[10, 20]]}\n"
      "w3: {trace: solar.csv, seconds_per_row: 10, threshold: 0.5}\n",
      "schedule.yaml", dir);
  EXPECT_TRUE(s.up("w0", 3, 0));  // not listed: always up
  EXPECT_TRUE(s.up("w1", 1, 0));
  EXPECT_FALSE(s.up("w1", 2, 0));
  EXPECT_TRUE(s.up("w1", 5, 0));
  EXPECT_FALSE(s.up("w1", 8, 0));
  EXPECT_FALSE(s.up("w2", 0, 9.9));
  EXPECT_TRUE(s.up("w2", 0, 10));
  EXPECT_FALSE(s.up("w2", 0, 20));
  EXPECT_FALSE(s.up("w3", 0, 5));  // row 0: 0 MW
  EXPECT_TRUE(s.up("w3", 0, 15));  // rows 1-2 above 0.5
  EXPECT_TRUE(s.up("w3", 0, 29));
  EXPECT_FALSE(s.up("w3", 0, 35));  // row 3
  EXPECT_TRUE(s.up("w3", 0, 45));   // row 4
  EXPECT_FALSE(s.up("w3", 0, 55));  // past the trace
}

TEST(Schedule, BadSchedulesNameTheFileAndTheField) {
  auto error = [](const std::string& yaml) {
    try {
      Schedule::parse(yaml, "s.yaml", "/nonexistent");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("w1: {rounds: [[3, 1]]}"),
            "s.yaml: w1.rounds[0]: start must be >= 0 and below end (got [3, 1])");
  EXPECT_EQ(error("w1: {rounds: [[0, x]]}"), "s.yaml: w1.rounds[0]: expected a number");
  EXPECT_EQ(error("w1: {hours: [[0, 1]]}"),
            "s.yaml: w1.hours: unknown key (rounds, seconds, trace, seconds_per_row, threshold)");
  EXPECT_EQ(error("w1: {}"), "s.yaml: w1: no windows: give rounds, seconds or a trace");
  EXPECT_NE(error("w1: {trace: none.csv}").find("s.yaml: w1.trace: cannot read the trace"),
            std::string::npos);
  EXPECT_EQ(error("[1, 2]"), "s.yaml: expected a map of worker name to windows");
  // loco launch checks the names against the run's workers
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/s.yaml") << "w7: {rounds: [[0, 1]]}\n";
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 2);
  c.sync.schedule = dir + "/s.yaml";
  auto r =
      loco::testing::run_loco("launch --dry-run --config " + loco::testing::write_config(dir, c));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("error: sync.schedule: " + dir +
                          "/s.yaml: 'w7' is not a worker of this "
                          "run (w0 .. w1)"),
            std::string::npos)
      << r.output;
}

TEST(Faults, AKilledWorkerIsDroppedWithinItsLeaseAndItsRestartRejoins) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/coordinator", 3, 40, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto [coord, workers] = start_run(config, dir, {"w0", "w1", "w2"});
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= 3; }, 120))
      << read_text(dir + "/coord.log");
  ::kill(workers[2], SIGKILL);  // in the middle of a round
  EXPECT_EQ(wait_exit(workers[2]), 128 + SIGKILL);
  int64_t killed_at = logged_round(dir + "/coordinator");
  // The rounds go on without it once its lease (1.5 s) lapses.
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= killed_at + 3; }, 60))
      << read_text(dir + "/coord.log");
  pid_t again = spawn_shell(worker_cmd(config, dir, "w2"), dir + "/w2-again.log");
  for (pid_t w : {workers[0], workers[1], again}) EXPECT_EQ(wait_exit(w), 0);
  EXPECT_EQ(wait_exit(coord), 0) << read_text(dir + "/coord.log");

  auto metrics = read_metrics(dir + "/coordinator/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 40u);
  bool without = false, back = false;
  double loss_at_kill = 0;
  for (const auto& r : metrics) {
    auto m = members_of(r);
    bool has_w2 = std::find(m.begin(), m.end(), "w2") != m.end();
    if (r.at("round").get<int64_t>() == killed_at) loss_at_kill = r.at("val_loss").get<double>();
    if (r.at("round").get<int64_t>() > killed_at && !has_w2) without = true;
    if (without && has_w2) back = true;
  }
  EXPECT_TRUE(without) << "no round closed without the killed worker";
  EXPECT_TRUE(back) << "the restarted worker never took part again";
  EXPECT_LT(metrics.back().at("val_loss").get<double>(), loss_at_kill);
  std::string log = read_text(dir + "/w2-again.log");
  EXPECT_NE(log.find("joined at round"), std::string::npos) << log;
  EXPECT_EQ(log.find("joined at round 0,"), std::string::npos) << log;  // midway, not from 0
}

TEST(Faults, AKilledCoordinatorRestartsFromItsCheckpointAndNoRoundIsLostOrAppliedTwice) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/coordinator", 2, 30, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto [coord, workers] = start_run(config, dir, {"w0", "w1"});
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= 4; }, 120))
      << read_text(dir + "/coord.log");
  ::kill(coord, SIGKILL);
  EXPECT_EQ(wait_exit(coord), 128 + SIGKILL);
  // Every round a worker saw was checkpointed before it was served: the newest checkpoint is the
  // last round that closed.
  auto found = list_checkpoints(dir + "/coordinator/checkpoints");
  ASSERT_FALSE(found.empty());
  int64_t checkpointed = load_checkpoint(found.back()).step;
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the workers find it gone
  pid_t restarted =
      spawn_shell(loco_cmd("coordinator --resume --config " + config), dir + "/coord2.log");
  for (pid_t w : workers) EXPECT_EQ(wait_exit(w), 0);
  EXPECT_EQ(wait_exit(restarted), 0) << read_text(dir + "/coord2.log");

  std::string log2 = read_text(dir + "/coord2.log");
  EXPECT_NE(log2.find("resumed from"), std::string::npos) << log2;
  EXPECT_NE(log2.find("at round " + std::to_string(checkpointed)), std::string::npos) << log2;
  auto metrics = read_metrics(dir + "/coordinator/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 30u);
  for (size_t i = 0; i < metrics.size(); ++i)  // each round once, in order
    EXPECT_EQ(metrics[i].at("round").get<int64_t>(), int64_t(i) + 1);
  auto summary = nlohmann::json::parse(read_text(dir + "/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>());
  int64_t tokens = 0;
  for (const auto& r : metrics) tokens += r.at("round_tokens").get<int64_t>();
  EXPECT_EQ(summary.at("tokens").get<int64_t>(), tokens);  // no round counted twice
  EXPECT_EQ(tokens, 30 * 2 * 10 * c.train.batch_size * c.model.seq_len);
  for (std::string name : {"w0", "w1"}) {
    std::string log = read_text(dir + "/" + name + ".log");
    EXPECT_NE(log.find("joining again"), std::string::npos) << log;
  }
}

TEST(Faults, LaunchReplaysAScheduleInWhichAWorkerLeavesAndComesBack) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 3, 30, 40);  // rounds long enough to act within
  c.train.checkpoint_every = 40;  // w1 comes back to a run.dir that holds its own checkpoints
  std::ofstream(dir + "/schedule.yaml") << "w1: {rounds: [[0, 3], [8, 1000]]}\n";
  c.sync.schedule = dir + "/schedule.yaml";
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("launch: schedule: stopping w1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("launch: schedule: starting w1"), std::string::npos) << r.output;
  auto metrics = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 30u);
  std::vector<bool> with_w1;
  for (const auto& m : metrics) {
    auto names = members_of(m);
    with_w1.push_back(std::find(names.begin(), names.end(), "w1") != names.end());
    EXPECT_GE(names.size(), 2u);
  }
  EXPECT_TRUE(with_w1.front());
  auto gap = std::find(with_w1.begin(), with_w1.end(), false);
  ASSERT_NE(gap, with_w1.end()) << "w1 never left";
  EXPECT_NE(std::find(gap, with_w1.end(), true), with_w1.end()) << "w1 never came back";
  EXPECT_FALSE(list_checkpoints(dir + "/run/worker-1/checkpoints").empty());
  // The schedule's stop is no failure (sync.on_failure restart): nothing was restarted.
  std::string events = read_text(dir + "/run/launch_events.jsonl");
  EXPECT_NE(events.find("\"action\":\"schedule\",\"event\":\"exited\""), std::string::npos)
      << events;
  EXPECT_EQ(events.find("\"event\":\"restarted\""), std::string::npos) << events;
}

// Issue 15: a member that leaves does not strand its data. Three workers read leases of the
// coordinator's data plan (docs/data.md); w2 leaves (SIGTERM) and comes back with --resume, then
// the coordinator is killed and restarted. Every window any worker read is in LOCO_WINDOW_LOG:
// none twice within an epoch, and each epoch the plan counts as read holds every window of the
// corpus.
TEST(Faults, NoWindowIsReadTwiceInAnEpochAcrossALeaveARejoinAndACoordinatorRestart) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/coordinator", 3, 24, 10);
  c.train.batch_size = 8;  // 240 windows a round: the sample corpus's epoch takes a few rounds
  std::string config = loco::testing::write_config(dir, c);
  fs::create_directories(dir + "/windows");
  ::setenv("LOCO_WINDOW_LOG", (dir + "/windows").c_str(), 1);
  auto [coord, workers] = start_run(config, dir, {"w0", "w1", "w2"});
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= 3; }, 120))
      << read_text(dir + "/coord.log");
  ::kill(workers[2], SIGTERM);  // leaves, saying how far it read its lease
  EXPECT_EQ(wait_exit(workers[2]), 128 + SIGTERM);
  int64_t left_at = logged_round(dir + "/coordinator");
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= left_at + 2; }, 60));
  // Back with --resume; then (all three members in, as the first round after a restart waits
  // for sync.workers of them) the coordinator is killed and restarted.
  pid_t again = spawn_shell(worker_cmd(config, dir, "w2") + " --resume", dir + "/w2-again.log");
  ASSERT_TRUE(wait_until([&] { return logged_round(dir + "/coordinator") >= left_at + 5; }, 60));
  ::kill(coord, SIGKILL);
  EXPECT_EQ(wait_exit(coord), 128 + SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  pid_t coord2 =
      spawn_shell(loco_cmd("coordinator --resume --config " + config), dir + "/coord2.log");
  for (pid_t w : {workers[0], workers[1], again}) EXPECT_EQ(wait_exit(w), 0);
  EXPECT_EQ(wait_exit(coord2), 0) << read_text(dir + "/coord2.log");
  ::unsetenv("LOCO_WINDOW_LOG");

  // w2 left through Leave (not a lapsed lease), handing back the part of its lease it had not read.
  std::string log = read_text(dir + "/coord.log");
  EXPECT_NE(log.find("w2 left"), std::string::npos) << log;
  EXPECT_NE(log.find("w2 gave back"), std::string::npos) << log;
  EXPECT_NE(read_text(dir + "/coord2.log").find("data plan restored"), std::string::npos);
  // (epoch, window) -> reads, over every process's log (w2 wrote two: one per process).
  std::map<std::pair<int64_t, int64_t>, int> reads;
  std::map<std::pair<int64_t, int64_t>, int64_t> window_at;  // (epoch, position) -> window
  size_t files = 0;
  for (const auto& f : fs::directory_iterator(dir + "/windows")) {
    ++files;
    std::ifstream in(f.path());
    int64_t epoch = 0, position = 0, window = 0;
    while (in >> epoch >> position >> window) {
      ++reads[{epoch, window}];
      auto [it, fresh] = window_at.insert({{epoch, position}, window});
      EXPECT_EQ(it->second, window) << "position " << position << " maps to two windows";
    }
  }
  EXPECT_EQ(files, 4u);  // w0, w1, w2 and w2 again
  int twice = 0;
  for (const auto& [key, n] : reads) twice += n > 1;
  EXPECT_EQ(twice, 0) << "windows read more than once within their epoch";
  auto summary = nlohmann::json::parse(read_text(dir + "/coordinator/summary.json"));
  const auto& data = summary.at("data");
  const int64_t per_epoch = data.at("windows_per_epoch").get<int64_t>();
  const int64_t done = data.at("epochs_read").get<int64_t>();
  EXPECT_GE(done, 1) << data.dump();
  for (int64_t e = 0; e < done; ++e) {
    int64_t distinct = 0;
    for (const auto& [key, n] : reads) distinct += key.first == e;
    EXPECT_EQ(distinct, per_epoch) << "epoch " << e << " was not read whole";
  }
}

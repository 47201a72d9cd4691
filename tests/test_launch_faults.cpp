// `loco launch` through faults (sync.on_failure, docs/faults.md): real launches of the tiny
// model whose processes are killed with real signals, found by their pids in the launcher's
// run.dir/launch_events.jsonl; a worker that fails at every start; and --on-failure stop.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "launch/failure.h"
#include "loco/metrics.h"
#include "replica_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;
using loco::testing::logged_round;
using loco::testing::process_config;
using loco::testing::read_text;
using loco::testing::wait_exit;
using loco::testing::wait_until;

namespace {

// Every complete line of a launch's events file.
std::vector<nlohmann::json> events_of(const std::string& run_dir) {
  std::vector<nlohmann::json> events;
  std::ifstream in(run_dir + "/launch_events.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) events.push_back(j);
  }
  return events;
}

// The events of `process` named `event`.
std::vector<nlohmann::json> events_of(const std::string& run_dir, const std::string& process,
                                      const std::string& event) {
  std::vector<nlohmann::json> found;
  for (auto& e : events_of(run_dir))
    if (e.at("process") == process && e.at("event") == event) found.push_back(e);
  return found;
}

// The pid `process` was last started under (-1 before it starts).
pid_t pid_of(const std::string& run_dir, const std::string& process) {
  pid_t pid = -1;
  for (auto& e : events_of(run_dir))
    if (e.at("process") == process && (e.at("event") == "started" || e.at("event") == "restarted"))
      pid = e.at("pid").get<pid_t>();
  return pid;
}

// Starts `loco launch` of `config` in the background, its output in `log`.
pid_t start_launch(const std::string& config, const std::string& log,
                   const std::string& extra = "") {
  return loco::testing::spawn_shell(
      std::string(LOCO_BINARY) + " launch --config " + config + " " + extra, log);
}

// Launches `config` (output in dir/launch.log), SIGKILLs `process` (its pid from the events file)
// once `ready` holds, and returns the launch's exit code; `killed` gets the pid killed.
int launch_and_kill(const std::string& config, const std::string& dir, const std::string& process,
                    const std::function<bool()>& ready, const std::string& extra = "",
                    pid_t* killed = nullptr) {
  pid_t launch = start_launch(config, dir + "/launch.log", extra);
  pid_t pid = -1;
  if (!wait_until(ready, 120) || (pid = pid_of(dir + "/run", process)) <= 0 ||
      ::kill(pid, SIGKILL) != 0)
    ADD_FAILURE() << "could not kill " << process << ":\n" << read_text(dir + "/launch.log");
  if (killed) *killed = pid;
  return wait_exit(launch);
}

// Whether the coordinator of the run in dir/run has closed `round` rounds.
bool reached(const std::string& dir, int64_t round) {
  return logged_round(dir + "/run/coordinator/metrics.jsonl") >= round;
}

// The coordinator's metrics hold rounds 1..rounds, each once and in order.
void expect_every_round_once(const std::string& run_dir, int64_t rounds) {
  auto metrics = read_metrics(run_dir + "/coordinator/metrics.jsonl");
  ASSERT_EQ(int64_t(metrics.size()), rounds);
  for (size_t i = 0; i < metrics.size(); ++i)
    EXPECT_EQ(metrics[i].at("round").get<int64_t>(), int64_t(i) + 1);
}

// `process`'s first exit: a SIGKILL that the launcher answered with a restart.
nlohmann::json expect_killed_and_restarting(const std::string& run_dir,
                                            const std::string& process) {
  auto exited = events_of(run_dir, process, "exited");
  if (exited.empty()) {
    ADD_FAILURE() << process << " never exited:\n" << read_text(run_dir + "/launch_events.jsonl");
    return nlohmann::json::object();
  }
  EXPECT_EQ(exited.front().value("signal", 0), SIGKILL) << exited.front();
  EXPECT_EQ(exited.front().value("action", ""), "restart") << exited.front();
  return exited.front();
}

double final_val_loss(const std::string& run_dir) {
  return read_metrics(run_dir + "/coordinator/metrics.jsonl").back().at("val_loss").get<double>();
}

}  // namespace

// The policy alone: backoff doubling, give-up past the limit, what continue and stop mean, and
// the ranks of a DDP run or of a site failing (and restarting) as one group.
TEST(LaunchFailurePolicy, BacksOffGivesUpAndRestartsRanksByGroup) {
  Config c = process_config("/nonexistent", 2, 10, 10);
  c.sync.restart_limit = 3;
  launcher::Part worker("w1", {}), coord("coord", {});
  launcher::FailurePolicy policy(c);
  for (double delay : {1.0, 2.0, 4.0}) {
    auto d = policy.on_failure(worker, false, 2);
    EXPECT_EQ(d.kind, launcher::Decision::kRestart);
    EXPECT_EQ(d.delay_s, delay);
  }
  auto d = policy.on_failure(worker, false, 2);
  EXPECT_EQ(d.kind, launcher::Decision::kGiveUp);
  EXPECT_EQ(d.reason,
            "it failed 4 times, more than sync.restart_limit 3 within sync.restart_window_s 300 s");
  EXPECT_EQ(policy.on_failure(coord, false, 2).kind, launcher::Decision::kRestart);
  EXPECT_EQ(policy.on_failure(worker, true, 10).kind, launcher::Decision::kLeaveDown);  // run over
  EXPECT_EQ(policy.on_failure(worker, false, 9).kind,
            launcher::Decision::kLeaveDown);  // last round
  EXPECT_EQ(policy.too_few_workers(1), "");
  c.sync.coordinator.min_workers = 2;
  EXPECT_EQ(policy.too_few_workers(1),
            "only 1 of 2 workers remain, below sync.coordinator.min_workers 2");

  c.sync.on_failure = "continue";
  EXPECT_EQ(launcher::FailurePolicy(c).on_failure(worker, false, 2).kind,
            launcher::Decision::kLeaveDown);
  EXPECT_EQ(launcher::FailurePolicy(c).on_failure(coord, false, 2).kind, launcher::Decision::kStop);
  c.sync.on_failure = "stop";
  EXPECT_EQ(launcher::FailurePolicy(c).on_failure(worker, false, 2).kind,
            launcher::Decision::kStop);
  c.sync.on_failure = "restart";
  // Ranks fail as a group: a DDP run restarts whole (and stops when given up on or with
  // continue); a site's failures are counted once per site, whichever rank failed.
  Config ddp = c;
  ddp.sync.mode = Mode::kDdp;
  launcher::Part r1("r1", {}), r0("r0", {});
  r1.group = r0.group = "run";
  launcher::FailurePolicy ddp_policy(ddp);
  EXPECT_EQ(ddp_policy.on_failure(r1, false, -1).kind, launcher::Decision::kRestart);
  auto again = ddp_policy.on_failure(r0, false, -1);
  EXPECT_EQ(again.kind, launcher::Decision::kRestart);
  EXPECT_EQ(again.delay_s, 2.0);  // the group's second failure
  ddp.sync.on_failure = "continue";
  auto rank = launcher::FailurePolicy(ddp).on_failure(r1, false, -1);
  EXPECT_EQ(rank.kind, launcher::Decision::kStop);
  EXPECT_NE(rank.reason.find("cannot go on without one of its ranks"), std::string::npos);
  ddp.sync.on_failure = "restart", ddp.sync.restart_limit = 0;
  EXPECT_EQ(launcher::FailurePolicy(ddp).on_failure(r1, false, -1).kind,
            launcher::Decision::kStop);  // given up: no run without it
  Config sites = c;
  sites.sync.sites = {{"a", 2}, {"b", 2}};
  launcher::Part a0("a/0", {}), a1("a/1", {});
  a0.group = a1.group = "site a";
  launcher::FailurePolicy site_policy(sites);
  EXPECT_EQ(site_policy.on_failure(a1, false, 2).delay_s, 1.0);
  EXPECT_EQ(site_policy.on_failure(a0, false, 2).delay_s, 2.0);
  EXPECT_EQ(site_policy.on_failure(a0, false, 9).kind, launcher::Decision::kLeaveDown);
}

TEST(LaunchFaults, AKilledWorkerIsRestartedAndEveryRoundIsAppliedOnce) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 12;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto clean =
      loco::testing::run_loco("launch --config " + config + " --set run.dir=" + dir + "/clean");
  ASSERT_EQ(clean.exit_code, 0) << clean.output;

  pid_t w1 = -1;
  ASSERT_EQ(launch_and_kill(
                config, dir, "w1", [&] { return reached(dir, 3); }, "", &w1),
            0)
      << read_text(dir + "/launch.log");

  expect_every_round_once(dir + "/run", rounds);
  auto exited = expect_killed_and_restarting(dir + "/run", "w1");
  EXPECT_TRUE(exited.contains("round")) << exited;
  auto restarted = events_of(dir + "/run", "w1", "restarted");
  ASSERT_EQ(restarted.size(), 1u) << read_text(dir + "/run/launch_events.jsonl");
  EXPECT_NE(restarted.front().at("pid").get<pid_t>(), w1);
  EXPECT_NE(read_text(dir + "/launch.log").find("[w1] "), std::string::npos);
  double faulty = final_val_loss(dir + "/run"), reference = final_val_loss(dir + "/clean");
  EXPECT_NEAR(faulty, reference, 0.03 * reference) << "clean " << reference;
}

// Streaming DiLoCo (docs/streaming.md): a worker killed while a fragment's exchange runs behind
// its inner steps (a slow link keeps every exchange in flight for a while) is restarted, rejoins
// with the coordinator's state, and the global parameters every worker holds after each round are
// the coordinator's, each round applied once.
TEST(LaunchFaults, AStreamingWorkerKilledMidExchangeLeavesTheGlobalStateWhole) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 3, 6, 8);  // 48 steps, a round every 4: 12 rounds
  c.sync.mode = Mode::kStreaming;
  c.sync.streaming = {2, 2, 0.5};
  c.sync.link.mbps = 10;
  c.sync.link.latency_ms = 20;
  c.sync.link.shaping = "token_bucket";
  std::string config = loco::testing::write_config(dir, c);
  ASSERT_EQ(launch_and_kill(config, dir, "w1", [&] { return reached(dir, 3); }), 0)
      << read_text(dir + "/launch.log");
  expect_every_round_once(dir + "/run", 12);
  expect_killed_and_restarting(dir + "/run", "w1");
  std::map<int64_t, uint64_t> coordinator;
  for (const auto& rec : read_metrics(dir + "/run/coordinator/metrics.jsonl"))
    if (rec.contains("param_checksum"))
      coordinator[rec.at("round").get<int64_t>()] = rec.at("param_checksum").get<uint64_t>();
  auto workers = loco::testing::checksums_by_round(dir + "/run", 3);
  EXPECT_GE(workers.size(), 8u);
  for (const auto& [round, sums] : workers) {
    EXPECT_EQ(sums.size(), 1u) << "round " << round;
    if (coordinator.count(round)) EXPECT_EQ(*sums.begin(), coordinator[round]) << "round " << round;
  }
}

TEST(LaunchFaults, AKilledCoordinatorIsRestartedWithResumeAndTheRunFinishes) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 10;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto checkpointed = [&] {
    return reached(dir, 2) && !list_checkpoints(dir + "/run/coordinator/checkpoints").empty();
  };
  ASSERT_EQ(launch_and_kill(config, dir, "coord", checkpointed), 0)
      << read_text(dir + "/launch.log");

  expect_every_round_once(dir + "/run", rounds);
  auto restarted = events_of(dir + "/run", "coord", "restarted");
  ASSERT_EQ(restarted.size(), 1u) << read_text(dir + "/run/launch_events.jsonl");
  EXPECT_EQ(restarted.front().at("action"), "resume");
  std::string log = read_text(dir + "/launch.log");
  EXPECT_NE(log.find("resumed from"), std::string::npos) << log;
  auto summary = nlohmann::json::parse(read_text(dir + "/run/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>());
}

// A run stopped as a whole (SIGTERM to the launcher) goes on with `loco launch --resume`: the
// coordinator from its newest checkpoint, the workers rejoining; every round is applied once and
// the events file keeps both launches. A finished run, a run.dir no launch ran in, and a plain
// launch on a used run.dir are each refused with a line saying what to do.
TEST(LaunchFaults, AStoppedRunGoesOnWithLaunchResumeAndEveryRoundIsAppliedOnce) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 8;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  pid_t launch = start_launch(config, dir + "/launch.log");
  ASSERT_TRUE(wait_until(
      [&] {
        return reached(dir, 2) && !list_checkpoints(dir + "/run/coordinator/checkpoints").empty();
      },
      120))
      << read_text(dir + "/launch.log");
  ::kill(launch, SIGTERM);
  ASSERT_EQ(wait_exit(launch), 130) << read_text(dir + "/launch.log");
  ASSERT_LT(logged_round(dir + "/run/coordinator/metrics.jsonl"), rounds);

  auto again = loco::testing::run_loco("launch --config " + config);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("continue that run with `loco launch --resume`"), std::string::npos)
      << again.output;

  auto resumed = loco::testing::run_loco("launch --resume --config " + config);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("continuing the run in"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  expect_every_round_once(dir + "/run", rounds);
  auto summary = nlohmann::json::parse(read_text(dir + "/run/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>()) << summary;
  for (std::string process : {"coord", "w0", "w1"}) {
    auto started = events_of(dir + "/run", process, "started");
    ASSERT_EQ(started.size(), 2u) << read_text(dir + "/run/launch_events.jsonl");
    EXPECT_EQ(started[0].at("action"), "launch");
    EXPECT_EQ(started[1].at("action"), "resume");
  }

  auto finished = loco::testing::run_loco("launch --resume --config " + config);
  EXPECT_EQ(finished.exit_code, 1);
  EXPECT_NE(finished.output.find("finished"), std::string::npos) << finished.output;
  EXPECT_NE(finished.output.find("nothing to continue"), std::string::npos) << finished.output;
  auto none = loco::testing::run_loco("launch --resume --config " + config +
                                      " --set run.dir=" + dir + "/never");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.output.find("--resume: no launch ran in run.dir " + dir + "/never"),
            std::string::npos)
      << none.output;
  EXPECT_FALSE(fs::exists(dir + "/never"));
}

// Pause and exact resume (docs/faults.md): SIGUSR1 to `loco launch` ends the run at the end of
// the open round, every process checkpointed at that boundary and the run not complete; `loco
// launch --resume` then goes on to the very bits of the same run made without a pause: the
// coordinator's parameters after every round (their checksum) and its validation losses. Two
// workers, so the coordinator's sum of the pushes does not depend on their order.
void expect_pause_resumes_bit_for_bit(const std::string& dir, Config c, int64_t rounds) {
  c.run.dir = dir + "/whole";
  fs::create_directories(dir + "/whole-config");
  const std::string whole = loco::testing::write_config(dir + "/whole-config", c);
  c.run.dir = dir + "/run";
  const std::string paused = loco::testing::write_config(dir, c);
  auto uninterrupted = loco::testing::run_loco("launch --config " + whole);
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.output;

  pid_t launch = start_launch(paused, dir + "/launch.log");
  ASSERT_TRUE(wait_until([&] { return reached(dir, 2); }, 120)) << read_text(dir + "/launch.log");
  ::kill(launch, SIGUSR1);
  ASSERT_EQ(wait_exit(launch), 0) << read_text(dir + "/launch.log");
  const std::string first = read_text(dir + "/launch.log");
  EXPECT_NE(first.find("pausing"), std::string::npos) << first;
  EXPECT_NE(first.find("paused at round"), std::string::npos) << first;
  const int64_t at = logged_round(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_LT(at, rounds) << first;
  auto summary = nlohmann::json::parse(read_text(dir + "/run/coordinator/summary.json"));
  EXPECT_FALSE(summary.at("complete").get<bool>()) << summary;

  auto resumed = loco::testing::run_loco("launch --resume --config " + paused);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  for (std::string w : {"w0", "w1"})
    EXPECT_NE(resumed.output.find("exactly where its checkpoint left it"), std::string::npos)
        << w << ": " << resumed.output;
  EXPECT_EQ(resumed.output.find("not resuming exactly"), std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find("not exactly the run it resumes"), std::string::npos)
      << resumed.output;
  expect_every_round_once(dir + "/run", rounds);
  auto a = read_metrics(dir + "/whole/coordinator/metrics.jsonl");
  auto b = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].at("loss"), b[i].at("loss")) << "round " << i + 1;  // the pushes' mean loss
    // Rounds evaluated in both (streaming evaluates every H steps, and the pause's last round).
    if (!a[i].contains("param_checksum") || !b[i].contains("param_checksum")) continue;
    ++compared;
    EXPECT_EQ(a[i].at("param_checksum"), b[i].at("param_checksum"))
        << "round " << i + 1 << " (paused after round " << at << ")";
    EXPECT_EQ(a[i].at("val_loss"), b[i].at("val_loss")) << "round " << i + 1;
  }
  EXPECT_TRUE(b.back().contains("param_checksum"));  // the last round is among them
  EXPECT_GE(compared, 2);
}

TEST(LaunchFaults, APausedDilocoRunGoesOnBitForBitWithLaunchResume) {
  std::string dir = loco::testing::temp_dir();
  expect_pause_resumes_bit_for_bit(dir, process_config(dir + "/run", 2, 6, 10), 6);
}

// Streaming DiLoCo in 4 bits pauses after a fragment's result is mixed in (no exchange in
// flight), with the data its workers had begun reading for the next round handed back to them
// and the error feedback of the workers and of the coordinator's download in their checkpoints.
TEST(LaunchFaults, APausedStreamingRunGoesOnBitForBitWithLaunchResume) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 4, 8);  // 32 steps, a round every 4: 8 rounds
  c.sync.mode = Mode::kStreaming;
  c.sync.streaming = {2, 2, 0.5};
  c.sync.codec.type = "int4";  // with error feedback on both sides, checkpointed on both
  c.sync.codec.error_feedback = true;
  expect_pause_resumes_bit_for_bit(dir, c, 8);
}

// Under a trace schedule the coordinator's checkpoint carries the energy accounting: killed and
// resumed, it accounts the whole run, so a site powered throughout was up for all of the run's
// trace time, not only since the restart.
TEST(LaunchFaults, AResumedCoordinatorKeepsTheEnergyAccountedBeforeItsDeath) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 10;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string csv = "time,A\n";
  for (int i = 0; i < 200; ++i) {  // 5-minute rows of 50 gCO2/kWh, 1000 min in all
    char row[64];
    std::snprintf(row, sizeof(row), "2024-05-01T%02d:%02d:00Z,50\n", i * 5 / 60, i * 5 % 60);
    csv += row;
  }
  std::ofstream(dir + "/i.csv") << csv;
  std::ofstream(dir + "/schedule.yaml")
      << "trace: i.csv\nspeed: 100\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
         "  w0: {region: A}\n  w1: {region: A}\n";
  c.sync.schedule = dir + "/schedule.yaml";
  std::string config = loco::testing::write_config(dir, c);
  double before_s = 0;
  auto checkpointed = [&] {
    if (!reached(dir, 2) || list_checkpoints(dir + "/run/coordinator/checkpoints").empty())
      return false;
    for (const auto& r : read_metrics(dir + "/run/coordinator/metrics.jsonl"))
      if (r.contains("trace_s")) before_s = r.at("trace_s");
    return true;
  };
  ASSERT_EQ(launch_and_kill(config, dir, "coord", checkpointed), 0)
      << read_text(dir + "/launch.log");
  ASSERT_EQ(events_of(dir + "/run", "coord", "restarted").size(), 1u);
  auto summary = nlohmann::json::parse(read_text(dir + "/run/coordinator/summary.json"));
  const double trace_s = summary.at("trace_s");
  EXPECT_GT(before_s, 0);
  EXPECT_GT(trace_s, before_s);
  for (const char* site : {"w0", "w1"}) {
    const auto& e = summary.at("sites").at(site);
    EXPECT_NEAR(e.at("up_s").get<double>(), trace_s, 1e-6) << site << " " << e;
    EXPECT_GT(e.at("train_s").get<double>(), 0) << site;
  }
}

// Killed before its first checkpoint, the coordinator has nothing to resume: it starts fresh,
// its metrics so far moved aside, and the workers join it again.
TEST(LaunchFaults, ACoordinatorKilledBeforeItsFirstCheckpointStartsFresh) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 6;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto started = [&] { return pid_of(dir + "/run", "coord") > 0; };
  ASSERT_EQ(launch_and_kill(config, dir, "coord", started), 0) << read_text(dir + "/launch.log");

  expect_every_round_once(dir + "/run", rounds);
  auto restarted = events_of(dir + "/run", "coord", "restarted");
  ASSERT_EQ(restarted.size(), 1u) << read_text(dir + "/run/launch_events.jsonl");
  EXPECT_EQ(restarted.front().at("action"), "fresh");
  EXPECT_NE(read_text(dir + "/launch.log").find("fresh: no checkpoint yet"), std::string::npos);
}

// --on-failure continue: a killed worker stays down and the run finishes with the other.
TEST(LaunchFaults, OnFailureContinueLeavesAKilledWorkerDown) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 8;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  ASSERT_EQ(launch_and_kill(
                config, dir, "w1", [&] { return reached(dir, 2); }, "--on-failure continue"),
            0)
      << read_text(dir + "/launch.log");
  expect_every_round_once(dir + "/run", rounds);
  auto exited = events_of(dir + "/run", "w1", "exited");
  ASSERT_EQ(exited.size(), 1u);
  EXPECT_EQ(exited.front().at("action"), "continue");
  EXPECT_TRUE(events_of(dir + "/run", "w1", "restarted").empty());
  auto last = read_metrics(dir + "/run/coordinator/metrics.jsonl").back();
  EXPECT_EQ(last.at("members"), nlohmann::json::array({"w0"}));
  EXPECT_NE(read_text(dir + "/launch.log").find("the run goes on with 1 of 2 workers"),
            std::string::npos);
}

// w1's run.dir is a plain file: it joins, fails to make its run.dir and exits 1, every time.
TEST(LaunchFaults, AWorkerThatFailsAtEveryStartIsGivenUpAndTheRunGoesOn) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 6;
  Config c = process_config(dir + "/run", 2, rounds, 10);
  c.sync.restart_limit = 2;
  c.sync.coordinator.min_workers = 1;
  c.sync.coordinator.round_timeout_s = 5;
  c.sync.coordinator.lease_s = 60;  // w0 is held stopped below; it must not lapse meanwhile
  std::string config = loco::testing::write_config(dir, c);
  fs::create_directories(dir + "/run");
  std::ofstream(dir + "/run/worker-1") << "not a directory\n";
  // w0 alone can finish the run before w1 has failed three times (CI saw it, under load): it is
  // held (SIGSTOP) from round 1 until the launcher has given up on w1.
  pid_t launch = start_launch(config, dir + "/launch.log");
  pid_t w0 = -1;
  ASSERT_TRUE(wait_until([&] { return reached(dir, 1); }, 120)) << read_text(dir + "/launch.log");
  ASSERT_GT(w0 = pid_of(dir + "/run", "w0"), 0);
  ASSERT_EQ(::kill(w0, SIGSTOP), 0);
  bool gave_up =
      wait_until([&] { return !events_of(dir + "/run", "w1", "given_up").empty(); }, 120);
  ::kill(w0, SIGCONT);
  ASSERT_TRUE(gave_up) << read_text(dir + "/launch.log");
  const int exit_code = wait_exit(launch);
  const loco::testing::CommandResult r{exit_code, read_text(dir + "/launch.log")};
  ASSERT_EQ(r.exit_code, 0) << r.output;

  EXPECT_EQ(events_of(dir + "/run", "w1", "exited").size(), 3u);
  EXPECT_EQ(events_of(dir + "/run", "w1", "restarted").size(), 2u);
  auto given_up = events_of(dir + "/run", "w1", "given_up");
  ASSERT_EQ(given_up.size(), 1u) << read_text(dir + "/run/launch_events.jsonl");
  EXPECT_NE(r.output.find("launch: w1 exited with status 1; giving up on it: it failed 3 times, "
                          "more than sync.restart_limit 2 within sync.restart_window_s 300 s"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("the run goes on with 1 of 2 workers"), std::string::npos);
  expect_every_round_once(dir + "/run", rounds);
}

TEST(LaunchFaults, OnFailureStopStopsTheRunWhenAWorkerDies) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 30, 10);
  std::string config = loco::testing::write_config(dir, c);
  auto bad = loco::testing::run_loco("launch --dry-run --on-failure later --config " + config);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("sync.on_failure: 'later' is not one of restart | continue | stop"),
            std::string::npos)
      << bad.output;

  EXPECT_EQ(launch_and_kill(
                config, dir, "w0", [&] { return reached(dir, 1); }, "--on-failure stop"),
            1);
  std::string log = read_text(dir + "/launch.log");
  EXPECT_NE(log.find("launch: w0 exited with signal 9 (Killed); stopping the rest "
                     "(sync.on_failure is stop)"),
            std::string::npos)
      << log;
  auto exited = events_of(dir + "/run", "w0", "exited");
  ASSERT_EQ(exited.size(), 1u);
  EXPECT_EQ(exited.front().at("action"), "stop");
  EXPECT_FALSE(events_of(dir + "/run", "coord", "stopped").empty());
  EXPECT_TRUE(events_of(dir + "/run", "w0", "restarted").empty());
}

// A rank of a site killed: the launcher stops the site's other rank and starts both again with
// --resume; rank 0 joins the coordinator again under the site's name, pulls the state and hands
// it (with the step and data position) to rank 1 before the first step. Every round is applied
// once and the site's two ranks hold the same parameters after every sync, before and after.
TEST(LaunchFaults, AKilledSiteRankRestartsItsWholeSiteWhichRejoins) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 30;  // enough that the others do not finish the run first
  Config c = process_config(dir + "/run", 2, rounds, 10);
  apply_override(c, "sync.sites=a:2,b:1");
  c.sync.coordinator.lease_s = 60;  // b is held stopped below; it must not lapse meanwhile
  std::string config = loco::testing::write_config(dir, c);
  // Site b alone closes a round of the tiny model in ~60 ms, faster than site a restarts: it is
  // held (SIGSTOP) from a/1's death until site a has joined again, so that the run cannot end
  // before a's return whatever the machine's load (CI saw b finish all 30 rounds first).
  pid_t launch = start_launch(config, dir + "/launch.log");
  pid_t a1 = -1, b0 = -1;
  ASSERT_TRUE(wait_until([&] { return reached(dir, 3); }, 120)) << read_text(dir + "/launch.log");
  ASSERT_GT(a1 = pid_of(dir + "/run", "a/1"), 0);
  ASSERT_GT(b0 = pid_of(dir + "/run", "b/0"), 0);
  ASSERT_EQ(::kill(a1, SIGKILL), 0);
  ASSERT_EQ(::kill(b0, SIGSTOP), 0);
  auto joins = [&] {
    std::string log = read_text(dir + "/launch.log");
    size_t n = 0;
    for (size_t at = log.find(" joined as "); at != std::string::npos;
         at = log.find(" joined as ", at + 1))
      ++n;
    return n;
  };
  bool rejoined = wait_until([&] { return joins() >= 3; }, 120);
  ::kill(b0, SIGCONT);
  ASSERT_TRUE(rejoined) << read_text(dir + "/launch.log");
  ASSERT_EQ(wait_exit(launch), 0) << read_text(dir + "/launch.log");

  expect_every_round_once(dir + "/run", rounds);
  auto killed = expect_killed_and_restarting(dir + "/run", "a/1");
  ASSERT_TRUE(killed.contains("round")) << killed;
  auto stopped = events_of(dir + "/run", "a/0", "stopped");
  ASSERT_EQ(stopped.size(), 1u) << read_text(dir + "/run/launch_events.jsonl");
  EXPECT_NE(stopped.front().at("reason").get<std::string>().find("restarting site a"),
            std::string::npos);
  for (std::string rank : {"a/0", "a/1"}) {
    auto restarted = events_of(dir + "/run", rank, "restarted");
    ASSERT_EQ(restarted.size(), 1u) << rank << read_text(dir + "/run/launch_events.jsonl");
    EXPECT_EQ(restarted.front().at("action"), "resume") << rank;
  }
  EXPECT_TRUE(events_of(dir + "/run", "b/0", "restarted").empty());
  EXPECT_TRUE(events_of(dir + "/run", "coord", "restarted").empty());
  // The site's ranks agree after every sync, those after its return included (a step trained
  // again after the return is compared at its last time).
  auto checksums = [](const std::string& path) {
    std::map<int64_t, uint64_t> by_step;
    for (const auto& r : read_metrics(path))
      if (r.contains("param_checksum")) by_step[r.at("step")] = r.at("param_checksum");
    return by_step;
  };
  auto rank0 = checksums(dir + "/run/worker-0/metrics.jsonl");
  auto rank1 = checksums(dir + "/run/worker-0/rank-1/metrics.jsonl");
  const int64_t returned_after = (killed.at("round").get<int64_t>() + 1) * c.sync.inner_steps;
  int compared = 0, after_return = 0;
  for (const auto& [step, sum] : rank1) {
    if (!rank0.count(step)) continue;
    EXPECT_EQ(sum, rank0[step]) << "step " << step;
    ++compared;
    after_return += step > returned_after;
  }
  EXPECT_GE(compared, 4);
  EXPECT_GT(after_return, 0) << "no sync of site a after its return (after step " << returned_after
                             << ")";
}

// A DDP rank, or a single trainer, killed after a checkpoint: the launcher stops the other
// ranks and starts them all again with --resume from the newest checkpoint; the run completes.
TEST(LaunchFaults, AKilledDdpRankOrTrainerResumesTheRunFromItsCheckpoint) {
  for (const char* mode : {"ddp", "single"}) {
    SCOPED_TRACE(mode);
    std::string dir = loco::testing::temp_dir(mode);
    Config c = process_config(dir + "/run", 2, 6, 10);
    c.sync.mode = mode_from_name(mode);
    c.sync.workers = c.sync.mode == Mode::kDdp ? 2 : 1;
    c.train.checkpoint_every = 10;
    std::string config = loco::testing::write_config(dir, c);
    const std::string victim = c.sync.mode == Mode::kDdp ? "r1" : "train";
    auto checkpointed = [&] { return !list_checkpoints(dir + "/run/checkpoints").empty(); };
    ASSERT_EQ(launch_and_kill(config, dir, victim, checkpointed), 0)
        << read_text(dir + "/launch.log");
    for (const auto& e : events_of(dir + "/run")) {
      if (e.at("event") != "restarted") continue;
      EXPECT_EQ(e.at("action"), "resume") << e;
    }
    EXPECT_EQ(events_of(dir + "/run", victim, "restarted").size(), 1u)
        << read_text(dir + "/run/launch_events.jsonl");
    if (c.sync.mode == Mode::kDdp) {
      EXPECT_EQ(events_of(dir + "/run", "r0", "restarted").size(), 1u);
      EXPECT_EQ(events_of(dir + "/run", "r0", "stopped").size(), 1u);
    }
    EXPECT_NE(read_text(dir + "/launch.log").find("resumed from"), std::string::npos);
    auto summary = nlohmann::json::parse(read_text(dir + "/run/summary.json"));
    EXPECT_EQ(summary.at("steps").get<int64_t>(), c.train.max_steps) << summary;
    auto steps = read_metrics(dir + "/run/metrics.jsonl");
    ASSERT_FALSE(steps.empty());
    EXPECT_EQ(steps.back().at("step").get<int64_t>(), c.train.max_steps);
  }
}

// A worker stopped (SIGSTOP) past its lease, then continued: the coordinator dropped it and
// closed its rounds without it; on SIGCONT it finds out and rejoins. The launcher restarts
// nothing (nothing exited) and the run completes with every round once.
TEST(LaunchFaults, AWorkerStoppedPastItsLeaseRejoinsWhenContinued) {
  std::string dir = loco::testing::temp_dir();
  const int64_t rounds = 30;  // enough that the others do not finish the run first
  Config c = process_config(dir + "/run", 2, rounds, 10);
  std::string config = loco::testing::write_config(dir, c);
  pid_t launch = start_launch(config, dir + "/launch.log");
  ASSERT_TRUE(wait_until([&] { return reached(dir, 2); }, 120)) << read_text(dir + "/launch.log");
  pid_t w1 = pid_of(dir + "/run", "w1");
  ASSERT_GT(w1, 0);
  ASSERT_EQ(::kill(w1, SIGSTOP), 0);
  // The coordinator drops it when its lease lapses and goes on without it: a round closes after
  // the drop while w1 is still stopped. (A round closing is not enough by itself: w1 may have
  // pushed the current round before it stopped.)
  const std::string dropped = "w1 missed its lease";
  int64_t dropped_at = -1;
  bool went_on = wait_until(
      [&] {
        if (dropped_at < 0 && read_text(dir + "/launch.log").find(dropped) != std::string::npos)
          dropped_at = logged_round(dir + "/run/coordinator/metrics.jsonl");
        return dropped_at >= 0 && reached(dir, dropped_at + 1);
      },
      60);
  ::kill(w1, SIGCONT);
  EXPECT_TRUE(went_on) << read_text(dir + "/launch.log");
  ASSERT_EQ(wait_exit(launch), 0) << read_text(dir + "/launch.log");
  expect_every_round_once(dir + "/run", rounds);
  EXPECT_TRUE(events_of(dir + "/run", "w1", "restarted").empty());
  bool recovered = false;
  for (const auto& r : read_metrics(dir + "/run/worker-1/metrics.jsonl"))
    recovered = recovered || r.contains("recovered");
  EXPECT_TRUE(recovered) << read_text(dir + "/launch.log");
}

// SIGTERM to the launcher stops every process (nothing restarted, the coordinator's checkpoints
// kept for --resume); a second signal kills what is left at once.
TEST(LaunchFaults, SigtermStopsEveryProcessAndASecondOneKills) {
  for (int signals : {1, 2}) {
    SCOPED_TRACE(signals);
    std::string dir = loco::testing::temp_dir(std::to_string(signals));
    Config c = process_config(dir + "/run", 2, 30, 10);
    std::string config = loco::testing::write_config(dir, c);
    pid_t launch = start_launch(config, dir + "/launch.log");
    ASSERT_TRUE(wait_until([&] { return reached(dir, 1); }, 120)) << read_text(dir + "/launch.log");
    ::kill(launch, SIGTERM);
    if (signals == 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      ::kill(launch, SIGTERM);
    }
    EXPECT_EQ(wait_exit(launch), 130);
    std::string log = read_text(dir + "/launch.log");
    EXPECT_NE(log.find("launch: interrupted; stopping every process"), std::string::npos) << log;
    if (signals == 2)
      EXPECT_NE(log.find("launch: interrupted again; killing every process"), std::string::npos)
          << log;
    for (std::string process : {"coord", "w0", "w1"}) {
      EXPECT_FALSE(events_of(dir + "/run", process, "stopped").empty()) << process;
      EXPECT_TRUE(events_of(dir + "/run", process, "restarted").empty()) << process;
    }
    EXPECT_FALSE(list_checkpoints(dir + "/run/coordinator/checkpoints").empty());
  }
}

// Sites that come and go (docs/multisite.md, docs/curtailment.md): real `loco launch` runs of the
// tiny model in which a 2-rank site leaves and rejoins by sync.schedule, a lone site trains on
// without rounds until a second site is up (sync.lone train), and rounds last sync.round_seconds
// of wall-clock; and the checks on the keys and the schedule's names.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace fs = std::filesystem;

#include "launch/schedule_replay.h"
#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "test_util.h"

using namespace loco;
using loco::testing::process_config;
using loco::testing::read_text;

namespace {

std::vector<nlohmann::json> events_of(const std::string& run_dir, const std::string& process,
                                      const std::string& event) {
  std::vector<nlohmann::json> found;
  std::ifstream in(run_dir + "/launch_events.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.at("process") == process && j.at("event") == event) found.push_back(j);
  }
  return found;
}

// The coordinator's rounds 1..n, each once and in order; returns n.
size_t expect_every_round_once(const std::string& run_dir) {
  auto metrics = read_metrics(run_dir + "/coordinator/metrics.jsonl");
  for (size_t i = 0; i < metrics.size(); ++i)
    EXPECT_EQ(metrics[i].at("round").get<int64_t>(), int64_t(i) + 1);
  return metrics.size();
}

// The last param_checksum in a metrics file (0 when none).
uint64_t last_checksum(const std::string& path) {
  uint64_t sum = 0;
  for (const auto& r : read_metrics(path))
    if (r.contains("param_checksum")) sum = r.at("param_checksum").get<uint64_t>();
  return sum;
}

// Every replica (each rank of each site) ends on the coordinator's last state.
void expect_same_final_parameters(const std::string& run_dir,
                                  const std::vector<std::string>& metrics_files) {
  const uint64_t global = last_checksum(run_dir + "/coordinator/metrics.jsonl");
  ASSERT_NE(global, 0u);
  for (const auto& f : metrics_files) EXPECT_EQ(last_checksum(run_dir + "/" + f), global) << f;
}

std::string write_schedule(const std::string& dir, const std::string& yaml) {
  std::ofstream(dir + "/schedule.yaml") << yaml;
  return dir + "/schedule.yaml";
}

}  // namespace

TEST(ElasticConfig, KeysAndScheduleNamesAreChecked) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 4, 5);
  auto error = [&](const std::string& assignment) {
    Config bad = c;
    return loco::testing::config_error([&] {
      apply_override(bad, assignment);
      validate(bad);
    });
  };
  EXPECT_NE(error("sync.round_seconds=-1").find("sync.round_seconds must be >= 0"),
            std::string::npos);
  EXPECT_NE(error("sync.lone=alone").find("sync.lone"), std::string::npos);
  Config demo = c;
  demo.sync.mode = Mode::kDemo, demo.sync.codec.type = "dct", demo.sync.lone = "train";
  EXPECT_NE(loco::testing::config_error([&] { validate(demo); })
                .find("sync.lone train needs "
                      "sync.mode diloco"),
            std::string::npos);
  // The budget: max_steps steps of every rank of every site.
  Config sites = c;
  apply_override(sites, "sync.sites=a:2,b:1");
  EXPECT_EQ(token_budget(sites),
            20 * c.train.batch_size * c.train.grad_accum * c.model.seq_len * 3);
  // Schedules name the sites of sync.sites.
  sites.sync.schedule = write_schedule(dir, "a: {rounds: [[0, 2]]}\nc: {rounds: [[0, 1]]}\n");
  EXPECT_EQ(loco::testing::config_error([&] { launcher::load_schedule(sites); }),
            "sync.schedule: " + dir + "/schedule.yaml: 'c' is not a site of this run (a, b)");
  sites.sync.schedule = write_schedule(dir, "b: {rounds: [[0, 2]]}\n");
  EXPECT_TRUE(launcher::load_schedule(sites).lists("b"));
}

// Site a (2 ranks) is down from round 3 to round 6 by the schedule; b trains on meanwhile. (30
// rounds: a must be back while rounds remain.)
TEST(Elastic, ATwoRankSiteLeavesAndRejoinsByTheSchedule) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 30, 10);
  apply_override(c, "sync.sites=a:2,b:1");
  c.sync.schedule = write_schedule(dir, "a: {rounds: [[0, 3], [6, 100]]}\n");
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string run = dir + "/run";
  EXPECT_EQ(expect_every_round_once(run), 30u);
  for (std::string rank : {"a/0", "a/1"}) {
    auto stopped = events_of(run, rank, "stopped");
    ASSERT_EQ(stopped.size(), 1u) << rank << read_text(run + "/launch_events.jsonl");
    EXPECT_EQ(stopped.front().at("reason"), "schedule");
    auto exited = events_of(run, rank, "exited");
    ASSERT_GE(exited.size(), 1u) << rank;
    EXPECT_EQ(exited.front().at("action"), "schedule") << exited.front();
    EXPECT_EQ(events_of(run, rank, "restarted").size(), 0u) << rank;  // no failure
    auto started = events_of(run, rank, "started");
    ASSERT_EQ(started.size(), 2u) << rank;  // at launch, and by the schedule
    EXPECT_EQ(started.back().at("action"), "schedule");
  }
  // a was gone from some rounds and back in the last ones.
  auto metrics = read_metrics(run + "/coordinator/metrics.jsonl");
  std::vector<bool> with_a;
  for (const auto& m : metrics) {
    auto members = m.at("members").get<std::vector<std::string>>();
    with_a.push_back(std::find(members.begin(), members.end(), "a") != members.end());
  }
  EXPECT_TRUE(with_a.front());
  EXPECT_NE(std::find(with_a.begin(), with_a.end(), false), with_a.end()) << "a never left";
  EXPECT_TRUE(with_a.back()) << "a did not come back";
  EXPECT_NE(r.output.find("site a: stopping on Terminated; leaving the coordinator"),
            std::string::npos)
      << r.output;
  expect_same_final_parameters(
      run, {"worker-0/metrics.jsonl", "worker-0/rank-1/metrics.jsonl", "worker-1/metrics.jsonl"});
}

// sync.lone train: `loco launch` runs the coordinator and site b (1 rank); site a (2 ranks) is
// down by the schedule all run long, and the test starts its ranks by hand once b's metrics show
// it trained alone past 3 round ends. b trains on without rounds (the coordinator closes none,
// receives nothing) and syncs once a is live. The budget (800 steps of 3 ranks) is more than b
// trains alone meanwhile, and the run ends at it.
TEST(Elastic, ALoneSiteTrainsWithoutRoundsAndSyncsOnceASecondJoins) {
  std::string dir = loco::testing::temp_dir();
  const int64_t h = 20;
  Config c = process_config(dir + "/run", 2, 40, h);
  apply_override(c, "sync.sites=a:2,b:1");
  c.train.eval_every = 0, c.train.log_every = 100;
  c.sync.lone = "train";
  c.sync.schedule = write_schedule(dir, "a: {seconds: [[1.0e8, 1.0e9]]}\n");
  const std::string config = loco::testing::write_config(dir, c);
  const std::string run = dir + "/run";
  pid_t launch = loco::testing::spawn_shell(std::string(LOCO_BINARY) + " launch --config " + config,
                                            dir + "/launch.log");
  auto lone_ends = [&] {
    int64_t n = 0;
    if (fs::exists(run + "/worker-1/metrics.jsonl"))
      for (const auto& rec : read_metrics(run + "/worker-1/metrics.jsonl"))
        n += rec.contains("lone");
    return n;
  };
  ASSERT_TRUE(loco::testing::wait_until([&] { return lone_ends() >= 3; }, 120))
      << read_text(dir + "/launch.log");
  const std::string port = std::to_string(loco::testing::free_port());
  std::vector<pid_t> ranks;
  for (int rank : {0, 1})
    ranks.push_back(loco::testing::spawn_shell(
        "env RANK=" + std::to_string(rank) + " WORLD_SIZE=2 LOCAL_RANK=" + std::to_string(rank) +
            " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " " + LOCO_BINARY +
            " worker --config " + config + " --set run.dir=" + run + "/worker-0 --coordinator " +
            c.sync.coordinator.address + " --site a",
        dir + "/a" + std::to_string(rank) + ".log"));
  for (pid_t p : ranks) EXPECT_EQ(loco::testing::wait_exit(p), 0) << read_text(dir + "/a0.log");
  ASSERT_EQ(loco::testing::wait_exit(launch), 0) << read_text(dir + "/launch.log");
  const std::string output = read_text(dir + "/launch.log");
  EXPECT_NE(output.find("worker b: the only live member; training on from round 0's state"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("worker b: another member is live; syncing the"), std::string::npos)
      << output;
  const size_t rounds = expect_every_round_once(run);
  ASSERT_GE(rounds, 1u);
  // b trained alone past several round ends, with no round and no bytes, before its first sync;
  // a never trained alone.
  std::map<std::string, int64_t> lone, first_sync_step;
  for (std::string site : {"a", "b"}) {
    lone[site] = 0, first_sync_step[site] = -1;
    const std::string file = run + (site == "a" ? "/worker-0" : "/worker-1") + "/metrics.jsonl";
    for (const auto& rec : read_metrics(file)) {
      if (rec.contains("lone")) {
        EXPECT_FALSE(rec.contains("round")) << rec;
        EXPECT_FALSE(rec.contains("bytes_up")) << rec;
        ++lone[site];
      }
      if (rec.contains("bytes_up") && first_sync_step[site] < 0)
        first_sync_step[site] = rec.at("step");
    }
  }
  EXPECT_GE(lone["b"], 3);
  EXPECT_EQ(lone["a"], 0);
  EXPECT_GT(first_sync_step["b"], 3 * h);
  // The coordinator's first round holds b's whole lone pseudo-gradient and both sites: more
  // tokens than a round in lockstep (h steps of 3 ranks).
  auto metrics = read_metrics(run + "/coordinator/metrics.jsonl");
  const int64_t step_tokens = c.train.batch_size * c.model.seq_len;
  EXPECT_GT(metrics.front().at("round_tokens").get<int64_t>(), 3 * h * step_tokens);
  EXPECT_EQ(metrics.front().at("workers"), 2);
  auto summary = nlohmann::json::parse(read_text(run + "/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>()) << summary;
  EXPECT_GE(summary.at("tokens").get<int64_t>(), token_budget(c));
  EXPECT_LT(rounds, 40u);  // the lone work counts in the budget: fewer rounds than in lockstep
  expect_same_final_parameters(
      run, {"worker-0/metrics.jsonl", "worker-0/rank-1/metrics.jsonl", "worker-1/metrics.jsonl"});
}

// sync.round_seconds: each worker syncs after a wall-clock window, whatever its step count; the
// run ends at its token budget with every round once.
// sync.lone train, sites that never overlap (the curtailment study's trace can have them): site b
// trains alone for its window and the schedule then stops it. It hands over its work since its
// anchor before it leaves: the coordinator closes round 1 with b alone and a long round's
// tokens, and nothing b trained is lost, although no second member ever came.
TEST(Elastic, ALoneSiteStoppedByTheScheduleHandsOverItsWorkFirst) {
  std::string dir = loco::testing::temp_dir();
  const int64_t h = 4;
  Config c = process_config(dir + "/run", 2, 1000, h);
  apply_override(c, "sync.sites=a:1,b:1");
  c.train.eval_every = 0, c.train.log_every = 100;
  c.sync.lone = "train";
  // b's window leaves room for a slow start: under CI's load a site has taken 11 s to join.
  c.sync.schedule =
      write_schedule(dir, "a: {seconds: [[1.0e8, 1.0e9]]}\nb: {seconds: [[0, 20]]}\n");
  const std::string config = loco::testing::write_config(dir, c);
  const std::string run = dir + "/run";
  pid_t launch = loco::testing::spawn_shell(std::string(LOCO_BINARY) + " launch --config " + config,
                                            dir + "/launch.log");
  const std::string coordinator = run + "/coordinator/metrics.jsonl";
  const bool closed = loco::testing::wait_until(
      [&] { return fs::exists(coordinator) && !read_metrics(coordinator).empty(); }, 120);
  ::kill(launch, SIGTERM);  // nobody is up any more: the run would wait for a forever
  loco::testing::wait_exit(launch);
  const std::string output = read_text(dir + "/launch.log");
  ASSERT_TRUE(closed) << output;
  EXPECT_NE(output.find("site b: stopping on Terminated; handing over the work trained alone"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("worker b: stopping while alone; handed over its"), std::string::npos)
      << output;
  auto rounds = read_metrics(coordinator);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds.front().at("workers").get<int>(), 1);
  // The round holds b's whole lone stretch: every token it trained (one rank), more than a
  // lockstep round's (h steps). How many steps fit in its 20 s depends on the machine's load.
  const int64_t lockstep = h * c.train.batch_size * c.model.seq_len;
  int handed = 0, lone = 0;
  int64_t trained = 0;
  for (const auto& rec : read_metrics(run + "/worker-1/metrics.jsonl")) {
    handed += rec.contains("handed_over"), lone += rec.contains("lone");
    if (rec.contains("tokens")) trained = std::max(trained, rec.at("tokens").get<int64_t>());
  }
  EXPECT_EQ(handed, 1);
  EXPECT_GE(lone, 1);
  EXPECT_GT(trained, lockstep);
  EXPECT_EQ(rounds.front().at("round_tokens").get<int64_t>(), trained);
  auto exited = events_of(run, "b/0", "exited");
  ASSERT_GE(exited.size(), 1u) << read_text(run + "/launch_events.jsonl");
  EXPECT_EQ(exited.front().at("action"), "schedule") << exited.front();
}

// A stop that comes before the site joined (a slow start: the coordinator not up yet) is not lost:
// the site's rank 0 leaves as soon as it has joined, having trained nothing, instead of training
// alone until the signal's thread gives up (30 s) and killing the process with the work in it.
TEST(Elastic, AStopBeforeTheSiteJoinedEndsItOnceJoined) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 1000, 4);
  apply_override(c, "sync.sites=a:1,b:1");
  c.train.eval_every = 0, c.train.log_every = 100;
  c.sync.lone = "train";
  const std::string config = loco::testing::write_config(dir, c);
  const std::string run = dir + "/run";
  pid_t site = loco::testing::spawn_shell(std::string(LOCO_BINARY) + " worker --config " + config +
                                              " --set run.dir=" + run + "/worker-1 --coordinator " +
                                              c.sync.coordinator.address + " --site b",
                                          dir + "/b.log");
  ASSERT_TRUE(loco::testing::wait_until(
      [&] { return read_text(dir + "/b.log").find("not reachable yet") != std::string::npos; }, 60))
      << read_text(dir + "/b.log");
  ::kill(site, SIGTERM);
  ASSERT_TRUE(loco::testing::wait_until(
      [&] { return read_text(dir + "/b.log").find("site b: stopping on") != std::string::npos; },
      10))
      << read_text(dir + "/b.log");
  pid_t coordinator = loco::testing::spawn_shell(
      std::string(LOCO_BINARY) + " coordinator --config " + config, dir + "/coordinator.log");
  const auto start = std::chrono::steady_clock::now();
  const int status = loco::testing::wait_exit(site);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::kill(coordinator, SIGTERM);
  loco::testing::wait_exit(coordinator);
  const std::string b_log = read_text(dir + "/b.log"),
                    coord_log = read_text(dir + "/coordinator.log");
  EXPECT_EQ(status, 128 + SIGTERM) << b_log;
  EXPECT_LT(took, 20) << b_log;  // the signal's thread would have waited 30 s
  EXPECT_NE(b_log.find("site b: stopping on Terminated; waiting for the site's rank 0"),
            std::string::npos)
      << b_log;
  EXPECT_NE(coord_log.find("b joined as b"), std::string::npos) << coord_log;
  const std::string b_metrics = run + "/worker-1/metrics.jsonl";
  if (fs::exists(b_metrics))
    for (const auto& rec : read_metrics(b_metrics)) EXPECT_FALSE(rec.contains("lone")) << rec;
}

TEST(Elastic, RoundsOfSecondsHaveVaryingStepCountsAndEndAtTheBudget) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 100, 5);  // a budget of 500 steps of each worker
  c.train.eval_every = 0, c.train.log_every = 100;
  c.sync.round_seconds = 0.5;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string run = dir + "/run";
  const size_t rounds = expect_every_round_once(run);
  ASSERT_GE(rounds, 2u);
  // Every worker pushed once per round.
  for (std::string w : {"worker-0", "worker-1"}) {
    int64_t syncs = 0;
    for (const auto& rec : read_metrics(run + "/" + w + "/metrics.jsonl"))
      syncs += rec.contains("bytes_up");
    EXPECT_EQ(syncs, int64_t(rounds)) << w;
  }
  // The rounds' step counts (their tokens) vary.
  std::set<int64_t> round_tokens;
  for (const auto& m : read_metrics(run + "/coordinator/metrics.jsonl"))
    round_tokens.insert(m.at("round_tokens").get<int64_t>());
  EXPECT_GE(round_tokens.size(), 2u);
  auto summary = nlohmann::json::parse(read_text(run + "/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>()) << summary;
  EXPECT_GE(summary.at("tokens").get<int64_t>(), token_budget(c));
  expect_same_final_parameters(run, {"worker-0/metrics.jsonl", "worker-1/metrics.jsonl"});
}

// sync.round_seconds with a site of two ranks: a round of seconds may last more steps than a
// round's data lease holds, so the site's rank 0 claims the next lease before its ranks run out
// and hands it to them (docs/data.md); the run ends at its budget with both of a's ranks and b on
// the same parameters, every round once.
TEST(Elastic, ATwoRankSiteRunsRoundsOfSecondsOnRefilledLeases) {
  std::string dir = loco::testing::temp_dir();
  Config c = process_config(dir + "/run", 2, 60, 2);  // rounds of 2 steps' lease, 0.5 s long
  apply_override(c, "sync.sites=a:2,b:1");
  c.train.eval_every = 0, c.train.log_every = 100;
  c.sync.round_seconds = 0.5;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string run = dir + "/run";
  ASSERT_GE(expect_every_round_once(run), 2u);
  // Some round of site a ran more steps than one lease holds (2 steps): it was refilled.
  int64_t longest = 0, last_sync = 0;
  for (const auto& rec : read_metrics(run + "/worker-0/metrics.jsonl")) {
    if (!rec.contains("bytes_up")) continue;
    longest = std::max(longest, rec.at("step").get<int64_t>() - last_sync);
    last_sync = rec.at("step");
  }
  EXPECT_GT(longest, 2) << "no round of a outran its lease; the test shows nothing";
  auto summary = nlohmann::json::parse(read_text(run + "/coordinator/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>()) << summary;
  expect_same_final_parameters(
      run, {"worker-0/metrics.jsonl", "worker-0/rank-1/metrics.jsonl", "worker-1/metrics.jsonl"});
}

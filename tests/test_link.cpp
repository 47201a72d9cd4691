// Tests of the slow link (sync.link, docs/link.md): its config keys and --link flag, the token
// bucket's pace against bytes*8/rate, the paced gRPC transport, the DDP model, and real
// `loco launch` runs under a slow link (token bucket everywhere; netns where this is root).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <thread>

#include "../src/launch/netns.h"
#include "loco/coord_client.h"
#include "loco/coord_service.h"
#include "loco/link.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "test_util.h"

using namespace loco;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, false);
}

// The sync records (those with a round) of every worker of a launched run.
std::vector<nlohmann::json> sync_records(const std::string& run_dir, int workers) {
  std::vector<nlohmann::json> out;
  for (int k = 0; k < workers; ++k)
    for (const auto& m : read_metrics(run_dir + "/worker-" + std::to_string(k) + "/metrics.jsonl"))
      if (m.contains("round")) out.push_back(m);
  return out;
}

}  // namespace

TEST(LinkConfig, KeysParseAndValidateNamingTheKey) {
  Config c;
  merge_yaml(c, "sync: {link: {mbps: 100, latency_ms: 50, shaping: token_bucket}}", "test");
  EXPECT_EQ(c.sync.link.mbps, 100);
  EXPECT_EQ(c.sync.link.latency_ms, 50);
  EXPECT_EQ(c.sync.link.shaping, "token_bucket");
  EXPECT_NO_THROW(validate(c));
  EXPECT_NE(to_yaml(c).find("latency_ms: 50"), std::string::npos);

  Config bad;
  apply_override(bad, "sync.link.mbps=-1");
  EXPECT_NE(loco::testing::config_error([&] { validate(bad); }).find("sync.link.mbps"),
            std::string::npos);
  bad = Config{};
  apply_override(bad, "sync.link.shaping=tbf");
  EXPECT_NE(loco::testing::config_error([&] {
              validate(bad);
            }).find("sync.link.shaping: 'tbf' is not one of"),
            std::string::npos);
  bad = Config{};
  apply_override(bad, "sync.link.latency_ms=-5");
  EXPECT_NE(loco::testing::config_error([&] { validate(bad); }).find("sync.link.latency_ms"),
            std::string::npos);
  bad = Config{};
  bad.sync.mode = Mode::kDdp, bad.sync.workers = 2, bad.sync.link.shaping = "netns";
  EXPECT_NE(
      loco::testing::config_error([&] { validate(bad); }).find("DDP's all-reduce is modelled"),
      std::string::npos);
  EXPECT_NE(loco::testing::config_error([&] {
              apply_override(bad, "sync.link.mbs=1");
            }).find("sync.link.mbps"),
            std::string::npos);  // the close match
}

TEST(LinkConfig, LaunchFlagBecomesOverrides) {
  EXPECT_EQ(link_overrides("100mbit,50ms"),
            (std::vector<std::string>{"sync.link.mbps=100", "sync.link.latency_ms=50"}));
  EXPECT_EQ(link_overrides("1gbit"), (std::vector<std::string>{"sync.link.mbps=1000"}));
  EXPECT_EQ(link_overrides("500kbit, 2s"),
            (std::vector<std::string>{"sync.link.mbps=0.5", "sync.link.latency_ms=2000"}));
  EXPECT_EQ(link_overrides("20"), (std::vector<std::string>{"sync.link.mbps=20"}));
  EXPECT_NE(loco::testing::config_error([] { link_overrides("fast"); }).find("--link 'fast'"),
            std::string::npos);
  EXPECT_NE(loco::testing::config_error([] { link_overrides("10mbit,20mbit"); }).find("two rates"),
            std::string::npos);
  EXPECT_NE(loco::testing::config_error([] { link_overrides("10furlongs"); }).find("unknown unit"),
            std::string::npos);
}

TEST(TokenBucket, PacesAStreamToTheRate) {
  const double mbps = 20, bytes = 2.5e6;  // 1.0 s at 20 Mbit/s
  TokenBucket bucket(mbps);
  auto t = std::chrono::steady_clock::now();
  for (double sent = 0; sent < bytes; sent += 65536) bucket.take(65536);
  double elapsed = seconds_since(t);
  double expected =
      (std::ceil(bytes / 65536) * 65536 - TokenBucket::kDefaultBurstBytes) * 8 / (mbps * 1e6);
  EXPECT_NEAR(elapsed, expected, 0.15 * expected) << "elapsed " << elapsed << " s";
}

TEST(TokenBucket, ConcurrentStreamsShareOneLink) {
  TokenBucket bucket(40);  // two streams of 2.5 MB: 5 MB at 40 Mbit/s = 1 s
  auto t = std::chrono::steady_clock::now();
  auto stream = [&] {
    for (int i = 0; i < 40; ++i) bucket.take(62500);
  };
  std::thread a(stream), b(stream);
  a.join(), b.join();
  double expected = (5e6 - TokenBucket::kDefaultBurstBytes) * 8 / 40e6;
  EXPECT_NEAR(seconds_since(t), expected, 0.15 * expected);
}

TEST(LinkPlan, RecordsWhatIsShapedWhere) {
  EXPECT_TRUE(plan_link(LinkConfig{}).record.is_null());  // unlimited: nothing recorded
  LinkConfig link;
  link.mbps = 100, link.latency_ms = 50;
  LinkPlan tb = plan_link(link);  // auto outside `loco launch`: the token bucket
  EXPECT_TRUE(tb.pace && tb.add_latency);
  EXPECT_EQ(tb.record["shaping"], "token_bucket");
  EXPECT_EQ(tb.record["mbps"], 100);
  link.shaping = "netns";
  ::setenv(kNetemEnv, "0", 1);  // namespaces without netem: the transport adds the latency
  LinkPlan ns = plan_link(link);
  EXPECT_FALSE(ns.pace);
  EXPECT_TRUE(ns.add_latency);
  EXPECT_EQ(ns.record["shaping"], "netns");
  ::setenv(kNetemEnv, "1", 1);
  EXPECT_FALSE(plan_link(link).add_latency);
  ::unsetenv(kNetemEnv);
}

TEST(LinkPlan, DdpIsModelledAsARing) {
  LinkConfig link;
  link.mbps = 100, link.latency_ms = 10;
  // 4 ranks: 6 ring steps of 10 ms, and 2*3/4 of 1 MB each way at 100 Mbit/s = 0.12 s.
  EXPECT_NEAR(ddp_link_seconds(link, 1000000, 4), 0.06 + 0.12, 1e-9);
  EXPECT_EQ(ddp_link_seconds(link, 1000000, 1), 0);
  EXPECT_EQ(ddp_link_seconds(LinkConfig{}, 1000000, 4), 0);
}

// A real coordinator and a client whose pushes and pulls go through a 20 Mbit/s, 30 ms link:
// each takes its wire bytes * 8 / rate plus one latency; an unlimited client stays fast.
TEST(LinkTransport, PushAndPullArePacedOverRealGrpc) {
  std::string dir = loco::testing::temp_dir();
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 1, 2);
  c.train.max_steps = 2;  // one round
  c.train.eval_every = 0;
  std::atomic<bool> stop{false};
  std::thread server([&] { run_coordinator(c, false, stop); });
  LinkConfig link;
  link.mbps = 20, link.latency_ms = 30, link.shaping = "token_bucket";
  CoordinatorClient slow(c.sync.coordinator.address, c.sync.coordinator, link);
  GPT model(c.model);
  const int64_t n = model->num_params();
  slow.join("slow", n);
  auto layout = loco::testing::model_layout(c);
  auto update = [&](int64_t round) { return loco::testing::zero_update(layout, round); };
  auto rate_s = [&](uint64_t bytes) { return double(bytes) * 8 / 20e6 + 0.030; };

  auto t = std::chrono::steady_clock::now();
  uint64_t up = slow.push(update(0));
  double push_s = seconds_since(t);
  EXPECT_NEAR(push_s, rate_s(up), 0.15 * rate_s(up)) << up << " bytes";
  auto pulled = torch::empty({n});
  t = std::chrono::steady_clock::now();
  PullResult r = slow.pull(1, layout, pulled, 60);
  double pull_s = seconds_since(t) - r.wait_s;  // the link starts when the state flows
  EXPECT_NEAR(pull_s, rate_s(r.wire_bytes), 0.15 * rate_s(r.wire_bytes)) << r.wire_bytes;
  std::cout << "20 Mbit/s + 30 ms: push " << up << " B in " << push_s << " s (expected "
            << rate_s(up) << "), pull " << r.wire_bytes << " B in " << pull_s << " s (expected "
            << rate_s(r.wire_bytes) << ")\n";
  EXPECT_EQ(slow.link_record()["shaping"], "token_bucket");
  EXPECT_GT(slow.link_wait_s(), 0.8 * (push_s + pull_s));

  stop = true;
  server.join();
  auto summary = read_json(dir + "/run/summary.json");
  EXPECT_FALSE(summary.contains("link"));  // the coordinator itself was given no link
  // Unlimited stays fast: the same state over loopback, well under the paced time.
  std::string rdir = loco::testing::temp_dir("_fast");
  Config f = loco::testing::coordinated_config(rdir + "/run", "diloco", 1, 2);
  f.train.max_steps = 2, f.train.eval_every = 0;
  stop = false;
  std::thread server2([&] { run_coordinator(f, false, stop); });
  CoordinatorClient unlimited(f.sync.coordinator.address, f.sync.coordinator);
  unlimited.join("fast", n);
  t = std::chrono::steady_clock::now();
  uint64_t fast_up = unlimited.push(update(0));
  unlimited.pull(1, layout, pulled, 60);
  double fast_s = seconds_since(t);
  std::cout << "unlimited: push + pull in " << fast_s << " s\n";
  EXPECT_LT(fast_s, 0.3 * (rate_s(fast_up) * 2)) << "unlimited push+pull took " << fast_s << " s";
  stop = true;
  server2.join();
}

namespace {

// Launches the tiny coordinated run (2 workers, 2 rounds) with extra arguments; returns the
// workers' sync records.
std::vector<nlohmann::json> launch_tiny(const std::string& dir, const std::string& extra,
                                        std::string* output = nullptr) {
  std::filesystem::create_directories(dir);
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 4);
  c.train.eval_every = 0;
  c.train.checkpoint_every = 0;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c) + " " +
                                   extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (output) *output = r.output;
  return sync_records(dir + "/run", 2);
}

// Checks that every sync took at least its bytes at the rate (15% slack) and returns the summed
// transfer time (sync time less the wait for the other workers).
double check_paced(const std::vector<nlohmann::json>& records, double mbps, double latency_ms) {
  double total = 0;
  for (const auto& m : records) {
    double bytes = m["bytes_up"].get<double>() + m["bytes_down"].get<double>();
    double expected = bytes * 8 / (mbps * 1e6) + 2 * latency_ms / 1e3;
    double link_time = m["sync_s"].get<double>() - m["idle_s"].get<double>();
    EXPECT_GT(link_time, 0.85 * expected) << m.dump();
    std::cout << "round " << m["round"] << ": " << bytes << " B, sync " << m["sync_s"]
              << " s, idle " << m["idle_s"] << " s, link time " << link_time
              << " s (rate: " << expected << " s)\n";
    total += link_time;
  }
  return total;
}

}  // namespace

// The brief's acceptance run: the tiny config under `--link 10mbit,20ms` (token bucket) against
// unlimited; each round moves ~0.7 MB each way per worker, ~0.6 s at 10 Mbit/s.
TEST(LinkLaunch, SlowLinkSlowsTheSyncAsExpected) {
  std::string dir = loco::testing::temp_dir();
  auto fast = launch_tiny(dir + "/fast", "");
  auto slow = launch_tiny(dir + "/slow", "--link 10mbit,20ms --set sync.link.shaping=token_bucket");
  ASSERT_EQ(fast.size(), 4u);
  ASSERT_EQ(slow.size(), 4u);
  // Sync time less the wait for the other workers (which depends on the machine's load): the
  // time the transfers themselves took.
  double slow_s = check_paced(slow, 10, 20), fast_s = 0;
  for (const auto& m : fast) {
    fast_s += m["sync_s"].get<double>() - m["idle_s"].get<double>();
    EXPECT_FALSE(m.contains("link"));
  }
  std::cout << "transfer time summed: unlimited " << fast_s << " s, slow link " << slow_s << " s\n";
  EXPECT_GT(slow_s, fast_s + 0.8 * 4 * 1.0) << "slow " << slow_s << " s, fast " << fast_s << " s";
  EXPECT_EQ(slow[0]["link"]["shaping"], "token_bucket");
  EXPECT_EQ(slow[0]["link"]["mbps"], 10);
  auto summary = read_json(dir + "/slow/run/coordinator/summary.json");
  EXPECT_EQ(summary["link"]["shaping"], "token_bucket");
  EXPECT_EQ(summary["link"]["latency_ms"], 20);
}

// Real shaping: each worker in a network namespace, tc tbf on its veth. Needs root with ip and
// tc; skipped elsewhere. Afterwards no namespace of the run is left.
TEST(LinkLaunch, NetnsShapesForRealAndCleansUp) {
  std::string why = netns_unavailable();
  if (!why.empty()) GTEST_SKIP() << "netns shaping unavailable: " << why;
  auto before = loco::testing::run_command("ip netns list").output;
  std::string dir = loco::testing::temp_dir();
  std::string output;
  auto slow = launch_tiny(dir, "--set sync.link.mbps=10 --set sync.link.shaping=netns", &output);
  ASSERT_EQ(slow.size(), 4u) << output;
  check_paced(slow, 10 * 0.97, 0);  // tbf counts Ethernet/IP/TCP headers too
  EXPECT_EQ(slow[0]["link"]["shaping"], "netns");
  auto summary = read_json(dir + "/run/coordinator/summary.json");
  EXPECT_EQ(summary["link"]["shaping"], "netns");
  EXPECT_NE(output.find("shaped by netns"), std::string::npos) << output;
  EXPECT_EQ(loco::testing::run_command("ip netns list").output, before);
}

// DDP: the step sleeps what a ring all-reduce would take on the link; metrics say so.
TEST(LinkLaunch, DdpRecordsTheModelledLink) {
  std::string dir = loco::testing::temp_dir();
  Config c;
  merge_yaml(c, loco::testing::small_run_yaml(dir + "/run"), "test");
  c.sync.mode = Mode::kDdp, c.sync.workers = 2;
  c.train.max_steps = 2, c.train.eval_every = 0, c.train.checkpoint_every = 0;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c) +
                                   " --link 20mbit,5ms");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto metrics = read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  const auto& m = metrics.back();
  EXPECT_EQ(m["link"]["shaping"], "modelled");
  double expected = 2.0 * m["allreduce_bytes"].get<double>() / 2 * 8 / 20e6 + 2 * 0.005;
  EXPECT_NEAR(m["link_s"].get<double>(), expected, 1e-6);
  EXPECT_GE(m["comm_s"].get<double>(), expected);
}

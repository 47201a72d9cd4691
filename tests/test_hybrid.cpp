// Multi-site runs as real processes on loopback (a real coordinator, real Gloo groups): 2 sites x
// 2 ranks train one model with every site's ranks identical after every step; one site is plain
// DDP and sites of one rank are plain DiLoCo; bad site environments get one-line errors; the dry
// run prints every rank of every site.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "loco/config.h"
#include "loco/dist_env.h"
#include "loco/loader.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "loco/trainer.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;
using namespace loco;

namespace {

using Clock = std::chrono::steady_clock;

// A small run over prepared_sample(): `sites` as in --set sync.sites (empty: none).
Config small_config(const std::string& run_dir, const std::string& mode, int64_t workers,
                    const std::string& sites) {
  Config c;
  merge_yaml(c, loco::testing::small_run_yaml(run_dir), "test");
  c.train.optimizer.lr = 0.01;
  c.train.eval_every = 0;
  c.sync.mode = mode_from_name(mode);
  c.sync.workers = workers;
  c.sync.inner_steps = 2;
  c.sync.timeout_s = 30;
  if (!sites.empty()) apply_override(c, "sync.sites=" + sites);
  c.sync.coordinator.address = "127.0.0.1:" + std::to_string(loco::testing::free_port());
  return c;
}

std::string write_yaml(const std::string& path, const Config& c) {
  std::ofstream(path) << to_yaml(c);
  return path;
}

std::vector<nlohmann::json> metrics_of(const std::string& path) {
  return fs::exists(path) ? read_metrics(path) : std::vector<nlohmann::json>{};
}

template <typename T>
std::vector<T> column(const std::vector<nlohmann::json>& records, const char* key) {
  std::vector<T> out;
  for (const auto& r : records) out.push_back(r.at(key).get<T>());
  return out;
}

int error_lines(const std::string& output) {
  int n = 0;
  for (size_t p = output.find("error:"); p != std::string::npos; p = output.find("error:", p + 1))
    ++n;
  return n;
}

using loco::testing::read_text;
using loco::testing::spawn_shell;
using loco::testing::wait_exit;

// The val loss of the untrained model, evaluated as the coordinator evaluates (loco_coord).
double initial_val_loss(const Config& c) {
  GPT model(c.model);
  model->init_weights(c.run.seed);
  return evaluate_model(model, *load_tokens(c.data.val), load_token_bytes(c), c.train.batch_size,
                        c.model.seq_len, c.train.eval_batches, torch::kCPU)
      .loss;
}

}  // namespace

TEST(Hybrid, TwoSitesOfTwoRanksTrainOneModel) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", "diloco", 2, "a:2,b:2");
  c.train.max_steps = 16;
  c.sync.inner_steps = 4;
  c.sync.outer.momentum = 0.5;  // 0.9 needs more than 4 rounds to stop oscillating
  auto started = Clock::now();
  auto r = loco::testing::run_loco("launch --config " + write_yaml(dir + "/config.yaml", c));
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* label : {"[coord]", "[a/0]", "[a/1]", "[b/0]", "[b/1]"})
    EXPECT_NE(r.output.find(label), std::string::npos) << label;

  // The global model: 4 rounds of both sites, each weighed by all of its ranks' tokens; its val
  // loss falls from the untrained model's.
  auto global = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(global.size(), 4u);
  const int64_t site_tokens = 2 * c.sync.inner_steps * c.train.batch_size * c.model.seq_len;
  for (const auto& g : global) {
    EXPECT_EQ(g.at("workers").get<int>(), 2);
    EXPECT_EQ(g.at("round_tokens").get<int64_t>(), 2 * site_tokens);
  }
  double before = initial_val_loss(c), first = global.front().at("val_loss").get<double>(),
         last = global.back().at("val_loss").get<double>();
  std::cout << "2x2 hybrid: val loss untrained " << before << ", round 1 " << first << ", round 4 "
            << last << "; launch took " << seconds << " s\n";
  EXPECT_LT(first, before);
  EXPECT_LT(last, first);
  EXPECT_LT(last, before - 0.3);

  std::map<std::string, std::vector<nlohmann::json>> ranks;  // "a/0" -> its records
  for (int k = 0; k < 2; ++k) {
    std::string site = k == 0 ? "a" : "b", wdir = dir + "/run/worker-" + std::to_string(k);
    ranks[site + "/0"] = metrics_of(wdir + "/metrics.jsonl");
    ranks[site + "/1"] = metrics_of(wdir + "/rank-1/metrics.jsonl");
    ASSERT_EQ(ranks[site + "/0"].size(), 16u) << site;
    ASSERT_EQ(ranks[site + "/1"].size(), 16u) << site;
    // The ranks of a site hold the same parameters after every step.
    EXPECT_EQ(column<uint64_t>(ranks[site + "/0"], "param_checksum"),
              column<uint64_t>(ranks[site + "/1"], "param_checksum"))
        << site;
    EXPECT_TRUE(fs::exists(wdir + "/checkpoints"));
    EXPECT_TRUE(fs::is_symlink(wdir + "/rank-1/checkpoints"));
    EXPECT_FALSE(fs::exists(wdir + "/summary.json")) << "the coordinator's summary is the run's";
  }
  for (size_t i = 0; i < 16; ++i) {
    int64_t step = int64_t(i) + 1;
    bool sync = step % c.sync.inner_steps == 0;
    std::set<uint64_t> checksums;
    for (const auto& [label, records] : ranks) {
      const auto& rec = records[i];
      checksums.insert(rec.at("param_checksum").get<uint64_t>());
      EXPECT_GT(rec.at("site_bytes_up").get<int64_t>(), 0) << label << " step " << step;
      EXPECT_EQ(rec.contains("round"), sync) << label << " step " << step;
      bool rank0 = label.back() == '0';
      EXPECT_EQ(rec.contains("bytes_up"), sync && rank0) << label << " step " << step;
      if (sync) EXPECT_EQ(rec.at("round").get<int64_t>(), step / c.sync.inner_steps) << label;
    }
    // After a sync every site holds the global model; between syncs the sites drift apart.
    EXPECT_EQ(checksums.size(), sync ? 1u : 2u) << "step " << step;
  }
  // Four streams of data: at step 1 (the same parameters everywhere) the sites' mean gradients
  // differ, and at step 2 (the same parameters within a site) so do a site's ranks' losses.
  EXPECT_NE(ranks["a/0"][0].at("grad_norm"), ranks["b/0"][0].at("grad_norm"));
  for (std::string site : {"a", "b"})
    EXPECT_NE(ranks[site + "/0"][1].at("rank_loss"), ranks[site + "/1"][1].at("rank_loss")) << site;
  EXPECT_LT(seconds, 60.0);
}

TEST(Hybrid, OneSiteIsPlainDdp) {
  std::string dir = loco::testing::temp_dir();
  Config site = small_config(dir + "/site", "diloco", 1, "a:2");
  Config ddp = small_config(dir + "/ddp", "ddp", 2, "");
  site.train.max_steps = ddp.train.max_steps = 6;
  auto dry =
      loco::testing::run_loco("launch --dry-run --config " + write_yaml(dir + "/site.yaml", site));
  EXPECT_EQ(dry.output.find("[coord]"), std::string::npos) << dry.output;
  EXPECT_EQ(dry.output.find("--coordinator"), std::string::npos) << dry.output;
  auto a = loco::testing::run_loco("launch --config " + dir + "/site.yaml");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = loco::testing::run_loco("launch --config " + write_yaml(dir + "/ddp.yaml", ddp));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  for (std::string sub : {"", "/rank-1"}) {
    auto x = metrics_of(dir + "/site" + sub + "/metrics.jsonl");
    auto y = metrics_of(dir + "/ddp" + sub + "/metrics.jsonl");
    ASSERT_EQ(x.size(), 6u) << sub;
    EXPECT_EQ(column<double>(x, "loss"), column<double>(y, "loss")) << sub;
    EXPECT_EQ(column<uint64_t>(x, "param_checksum"), column<uint64_t>(y, "param_checksum")) << sub;
  }
  EXPECT_EQ(metrics_of(dir + "/site/metrics.jsonl").back().at("val_loss"),
            metrics_of(dir + "/ddp/metrics.jsonl").back().at("val_loss"));
  // Its rank 0 writes DDP's summary.json, the same bytes and ratios.
  auto x = nlohmann::json::parse(std::ifstream(dir + "/site/summary.json"));
  auto y = nlohmann::json::parse(std::ifstream(dir + "/ddp/summary.json"));
  for (const char* key : {"bytes_total", "ddp_bytes", "ratio_vs_ddp", "tokens"})
    EXPECT_EQ(x.at(key), y.at(key)) << key;
  EXPECT_EQ(x.at("ratio_vs_ddp").get<double>(), 1.0);
}

TEST(Hybrid, SitesOfOneRankArePlainDiloco) {
  std::string dir = loco::testing::temp_dir();
  Config sites = small_config(dir + "/sites", "diloco", 2, "a:1,b:1");
  Config diloco = small_config(dir + "/diloco", "diloco", 2, "");
  sites.train.max_steps = diloco.train.max_steps = 6;
  auto a = loco::testing::run_loco("launch --config " + write_yaml(dir + "/sites.yaml", sites));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_NE(a.output.find("[b/0]"), std::string::npos);
  auto b = loco::testing::run_loco("launch --config " + write_yaml(dir + "/diloco.yaml", diloco));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  // Two workers' updates sum the same in either order, and each round the member in seat s
  // (site s, worker slot s) reads seat s's lease whatever order the claims arrive in
  // (docs/data.md): the global models agree bit for bit in every round.
  auto x = read_metrics(dir + "/sites/coordinator/metrics.jsonl");
  auto y = read_metrics(dir + "/diloco/coordinator/metrics.jsonl");
  ASSERT_EQ(x.size(), 3u);
  EXPECT_EQ(column<double>(x, "val_loss"), column<double>(y, "val_loss"));
  EXPECT_EQ(column<int64_t>(x, "round_tokens"), column<int64_t>(y, "round_tokens"));
}

TEST(Hybrid, TwoRunsOfSitesOfDifferentSizesAgreeBitForBit) {
  // Seat s is site s of the config whichever site joins or claims first (docs/data.md), so a
  // site of two ranks and one of one read the same windows in every round of both runs.
  std::string dir = loco::testing::temp_dir();
  std::vector<std::vector<double>> losses;
  for (const char* run : {"/one", "/two"}) {
    Config c = small_config(dir + run, "diloco", 2, "a:2,b:1");
    c.train.max_steps = 6;
    auto r = loco::testing::run_loco("launch --config " + write_yaml(dir + run + ".yaml", c));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    losses.push_back(
        column<double>(read_metrics(dir + run + "/coordinator/metrics.jsonl"), "val_loss"));
  }
  ASSERT_EQ(losses[0].size(), 3u);
  EXPECT_EQ(losses[0], losses[1]);
}

TEST(Hybrid, DryRunPrintsEveryRankOfEverySite) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", "diloco", 2, "a:2,b:1");
  std::string path = write_yaml(dir + "/config.yaml", c);
  auto dry = loco::testing::run_loco("launch --dry-run --config " + path);
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  const std::string& out = dry.output;
  EXPECT_NE(out.find("[coord] loco coordinator --config " + path), std::string::npos) << out;
  EXPECT_NE(out.find("[a/0] RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR="),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("[a/1] RANK=1 WORLD_SIZE=2"), std::string::npos) << out;
  EXPECT_NE(out.find("[b/0] loco worker --config " + path + " --set run.dir=" + dir +
                     "/run/worker-1 --coordinator " + c.sync.coordinator.address + " --site b"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Inside a site, MASTER_ADDR is the host of the site's rank 0"),
            std::string::npos)
      << out;
}

TEST(Hybrid, SiteRanksFailAtOnceWhenTheirRankZeroDies) {
  // No coordinator listens: rank 0 keeps retrying its join while rank 1 waits for it in the
  // site's store. Killing rank 0 must end rank 1 at once, not after the long wait for rank 0.
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", "diloco", 2, "a:2,b:2");
  std::string worker = std::string(LOCO_BINARY) + " worker --config " +
                       write_yaml(dir + "/config.yaml", c) + " --site a";
  std::string env =
      "env MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(loco::testing::free_port()) +
      " WORLD_SIZE=2 ";
  pid_t rank0 = spawn_shell(env + "RANK=0 " + worker, dir + "/a0.log");
  pid_t rank1 = spawn_shell(env + "RANK=1 " + worker, dir + "/a1.log");
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (read_text(dir + "/a0.log").find("not reachable yet (attempt 3)") == std::string::npos &&
         Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_NE(read_text(dir + "/a0.log").find("not reachable yet"), std::string::npos)
      << read_text(dir + "/a0.log");
  ::kill(rank0, SIGKILL);
  auto killed = Clock::now();
  int code = wait_exit(rank1);
  double waited = std::chrono::duration<double>(Clock::now() - killed).count();
  wait_exit(rank0);
  std::string log = read_text(dir + "/a1.log");
  EXPECT_EQ(code, 1) << log;
  EXPECT_LT(waited, 10.0) << log;  // the wait for rank 0 is minutes long; its death ends it
  EXPECT_NE(log.find("rank 1 waited for rank 0 (join) in vain"), std::string::npos) << log;
  EXPECT_EQ(error_lines(log), 1) << log;
}

TEST(Hybrid, SiteEnvironmentMistakesNameTheSitesKey) {
  auto lookup = [](std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  const std::string key = "sync.sites[a].ranks";
  try {
    read_dist_env(2, lookup({{"RANK", "0"}, {"WORLD_SIZE", "4"}}), key);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("WORLD_SIZE=4 but sync.sites[a].ranks is 2"),
              std::string::npos)
        << e.what();
  }
  try {
    read_dist_env(2, lookup({{"RANK", "0"}}), key);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("set WORLD_SIZE=2 (sync.sites[a].ranks)"),
              std::string::npos)
        << e.what();
  }
}

TEST(Hybrid, BadSiteInputGetsOneLineErrorAndNonZeroExit) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", "diloco", 2, "a:2,b:2");
  std::string config = write_yaml(dir + "/config.yaml", c);
  std::string worker = std::string(LOCO_BINARY) + " worker --config " + config;
  // A port that something listens on, for "in use".
  int busy_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(busy_fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::listen(busy_fd, 1), 0);
  ::getsockname(busy_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string busy = std::to_string(ntohs(addr.sin_port));
  std::string port = std::to_string(loco::testing::free_port());

  const std::string clean =
      "env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u LOCAL_WORLD_SIZE -u MASTER_ADDR -u MASTER_PORT ";
  struct Case {
    std::string command, expected;
  };
  std::vector<Case> cases = {
      {"RANK=0 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " " + worker + " --site a",
       "WORLD_SIZE=3 but sync.sites[a].ranks is 2: set them equal"},
      {"RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " " + worker + " --site a",
       "RANK=2 is out of range for WORLD_SIZE=2"},
      {"RANK=1 WORLD_SIZE=2 MASTER_PORT=" + port + " " + worker + " --site b",
       "MASTER_ADDR is not set (the address of rank 0, e.g. 127.0.0.1)"},
      {"RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + busy + " " + worker + " --site a",
       "MASTER_PORT " + busy + " is in use on rank 0's host: set MASTER_PORT to a free port"},
      {worker + " --site a", "sync.sites[a].ranks is 2 but RANK and WORLD_SIZE are not set"},
      {worker + " --site c", "--site c is not in sync.sites (a, b)"},
      {worker, "sync.sites lists sites: start each of their ranks with --site NAME"},
      {std::string(LOCO_BINARY) + " train --config " + config,
       "start each of their ranks with `loco worker --site NAME`"},
      {worker + " --site a --set sync.workers=3",
       "sync.workers is 3 but sync.sites lists 2 sites: set sync.workers=2"},
  };
  for (const auto& k : cases) {
    auto r = loco::testing::run_command(clean + k.command);
    EXPECT_EQ(r.exit_code, 1) << k.command << "\n" << r.output;
    EXPECT_NE(r.output.find(k.expected), std::string::npos) << k.command << "\n" << r.output;
    EXPECT_EQ(error_lines(r.output), 1) << r.output;
  }
  ::close(busy_fd);
}

TEST(Hybrid, TwoSitesRunTheDecoupledMethodBetweenThem) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run", "demo", 2, "a:2,b:2");
  c.train.max_steps = 16;
  c.sync.inner_steps = 4;
  c.sync.outer.momentum = 0.5;
  c.sync.codec.type = "dct";
  c.sync.codec.topk = 8;
  c.sync.resync_every = 2;
  auto r = loco::testing::run_loco("launch --config " + write_yaml(dir + "/config.yaml", c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto a0 = metrics_of(dir + "/run/worker-0/metrics.jsonl");
  auto a1 = metrics_of(dir + "/run/worker-0/rank-1/metrics.jsonl");
  auto b0 = metrics_of(dir + "/run/worker-1/metrics.jsonl");  // (both sites checksum the same way)
  ASSERT_EQ(a0.size(), 16u);
  ASSERT_EQ(a1.size(), 16u);
  ASSERT_EQ(b0.size(), 16u);
  // Site a's ranks agree after every step; the sites agree only after a resync (rounds 2, 4).
  EXPECT_EQ(column<uint64_t>(a0, "param_checksum"), column<uint64_t>(a1, "param_checksum"));
  for (int64_t round = 1; round <= 4; ++round) {
    size_t i = size_t(round * c.sync.inner_steps - 1);
    bool same = a0[i].at("param_checksum") == b0[i].at("param_checksum");
    EXPECT_EQ(same, round % 2 == 0) << "round " << round;
  }
  std::vector<double> val;
  for (const auto& g : read_metrics(dir + "/run/coordinator/metrics.jsonl"))
    if (g.contains("consensus")) val.push_back(g.at("val_loss").get<double>());
  ASSERT_EQ(val.size(), 2u);
  EXPECT_LT(val.back(), initial_val_loss(c));
}

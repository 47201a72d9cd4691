// DDP over c10d as real `loco train` processes on loopback: W ranks with batch b follow one
// process with batch W*b and stay identical, a dead or hung rank fails the others within
// sync.timeout_s, an interrupted run resumes on every rank, and bad torchrun-style environments
// get one-line errors. The environment parsing itself is checked in-process first.
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
#include <sstream>
#include <thread>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/dist_env.h"
#include "loco/metrics.h"
#include "loco/prepare.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// Environment variables a test sets; every torchrun variable it does not set is removed.
using Env = std::map<std::string, std::string>;

std::string env_prefix(const Env& env) {
  std::string out =
      "env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u LOCAL_WORLD_SIZE -u MASTER_ADDR "
      "-u MASTER_PORT";
  for (const auto& [k, v] : env) out += " " + k + "=" + v;
  return out;
}

// A TCP socket bound to a port of the kernel's choosing on all addresses; listening when asked.
struct BoundPort {
  int fd = -1, port = 0;
  explicit BoundPort(bool listen_on_it) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
    if (listen_on_it) EXPECT_EQ(::listen(fd, 1), 0);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~BoundPort() { ::close(fd); }
};

// A `loco train` process started in the background, its output going to `log`.
struct Proc {
  pid_t pid = -1;
  std::string log;
};

Proc spawn_loco(const Env& env, const std::string& args, const std::string& log) {
  std::string command =
      "exec " + env_prefix(env) + " " + LOCO_BINARY + " " + args + " > " + log + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  Proc p{-1, log};
  EXPECT_EQ(::posix_spawn(&p.pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ),
            0);
  return p;
}

int wait_exit(const Proc& p) {
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int error_lines(const std::string& output) {
  int n = 0;
  for (size_t p = output.find("error:"); p != std::string::npos; p = output.find("error:", p + 1))
    ++n;
  return n;
}

std::vector<nlohmann::json> metrics_of(const std::string& path) {
  return fs::exists(path) ? loco::read_metrics(path) : std::vector<nlohmann::json>{};
}

std::vector<double> column(const std::vector<nlohmann::json>& records, const char* key) {
  std::vector<double> out;
  for (const auto& r : records) out.push_back(r.at(key).get<double>());
  return out;
}

class DdpTest : public ::testing::Test {
 protected:
  // Per process: ctest runs each test in its own process, several at once.
  static void SetUpTestSuite() {
    data_dir_ =
        (fs::temp_directory_path() / ("loco_ddp_test_data_" + std::to_string(::getpid()))).string();
    loco::testing::remove_tree(data_dir_);
    loco::PrepareOptions opts;
    opts.inputs = {std::string(LOCO_SOURCE_DIR) + "/tests/data/sample.json"};
    opts.out_dir = data_dir_;
    opts.vocab_size = 512;
    opts.val_permille = 50;
    loco::prepare_data(opts);
  }
  static void TearDownTestSuite() { loco::testing::remove_tree(data_dir_); }

  // A small, fast model over the prepared sample; `batch` sequences per rank.
  std::string write_config(const std::string& dir, const std::string& mode, int workers,
                           int batch) {
    std::string path = dir + "/config_" + mode + std::to_string(workers) + ".yaml";
    std::ofstream(path) << "run: {name: test, dir: " << dir << "/run, seed: 3}\n"
                        << "data: {train: " << data_dir_ << "/train.bin, val: " << data_dir_
                        << "/val.bin, tokenizer: " << data_dir_ << "/tokenizer.model}\n"
                        << "model: {n_layer: 2, n_head: 2, n_embd: 64, seq_len: 32, "
                           "vocab_size: 512}\n"
                        << "train: {batch_size: " << batch
                        << ", max_steps: 6, eval_every: 3, eval_batches: 2,\n"
                        << "        checkpoint_every: 2, log_every: 2, threads: 1,\n"
                        << "        schedule: {warmup_steps: 2}}\n"
                        << "sync: {mode: " << mode << ", workers: " << workers
                        << ", timeout_s: 30}\n";
    return path;
  }

  // Starts `world` ranks of `loco train <args>` on loopback; logs go to dir/rank-N.log.
  std::vector<Proc> start_ranks(int world, const std::string& dir, const std::string& args,
                                Env extra = {}) {
    int port = loco::testing::free_port();
    std::vector<Proc> procs;
    for (int r = 0; r < world; ++r) {
      Env env = extra;
      env["RANK"] = std::to_string(r);
      env["WORLD_SIZE"] = std::to_string(world);
      env["MASTER_ADDR"] = "127.0.0.1";
      env["MASTER_PORT"] = std::to_string(port);
      procs.push_back(spawn_loco(env, args, dir + "/rank-" + std::to_string(r) + ".log"));
    }
    return procs;
  }

  // Runs the ranks to the end; asserts that every one exited 0.
  void run_ranks(int world, const std::string& dir, const std::string& args, Env extra = {}) {
    for (const auto& p : start_ranks(world, dir, args, extra))
      EXPECT_EQ(wait_exit(p), 0) << p.log << ":\n" << read_text(p.log);
  }

  static std::string data_dir_;
};
std::string DdpTest::data_dir_;

}  // namespace

TEST(DistEnvTest, NoVariablesAndOneWorkerIsRankZeroOfOne) {
  auto env = loco::read_dist_env(1, [](const char*) -> const char* { return nullptr; });
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_TRUE(env.master_addr.empty());
}

TEST(DistEnvTest, ReadsTorchrunVariables) {
  std::map<std::string, std::string> vars = {{"RANK", "3"},
                                             {"WORLD_SIZE", "4"},
                                             {"LOCAL_WORLD_SIZE", "2"},
                                             {"MASTER_ADDR", "10.0.0.1"},
                                             {"MASTER_PORT", "29501"}};
  auto env = loco::read_dist_env(4, [&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);  // RANK % LOCAL_WORLD_SIZE when LOCAL_RANK is not set
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 29501);
}

TEST(DistEnvTest, MistakesSayWhatToSet) {
  struct Case {
    int64_t workers;
    std::map<std::string, std::string> vars;
    std::string expected;
  };
  std::map<std::string, std::string> ok = {{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](std::map<std::string, std::string> v) {
    v.insert(ok.begin(), ok.end());
    return v;
  };
  std::vector<Case> cases = {
      {2, {}, "sync.workers is 2 but RANK and WORLD_SIZE are not set"},
      {4, with({{"RANK", "0"}, {"WORLD_SIZE", "3"}}),
       "WORLD_SIZE=3 but sync.workers is 4: set them equal"},
      {4, with({{"RANK", "5"}, {"WORLD_SIZE", "4"}}), "RANK=5 is out of range for WORLD_SIZE=4"},
      {2, with({{"RANK", "one"}, {"WORLD_SIZE", "2"}}), "RANK='one' is not an integer"},
      {2, with({{"RANK", "0"}}), "WORLD_SIZE is not: set WORLD_SIZE=2"},
      {2, with({{"WORLD_SIZE", "2"}}), "RANK is not: set RANK"},
      {2,
       with({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}}),
       "LOCAL_RANK=2 is out of range for LOCAL_WORLD_SIZE=2"},
      {2,
       {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}},
       "MASTER_ADDR is not set (the address of rank 0, e.g. 127.0.0.1)"},
      {2, {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "MASTER_PORT is not set"},
      {2,
       {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
       "MASTER_PORT='70000' is not a TCP port"},
  };
  for (const auto& c : cases) {
    try {
      loco::read_dist_env(c.workers, [&](const char* name) -> const char* {
        auto it = c.vars.find(name);
        return it == c.vars.end() ? nullptr : it->second.c_str();
      });
      ADD_FAILURE() << "no error, expected: " << c.expected;
    } catch (const loco::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
    }
  }
}

TEST_F(DdpTest, TwoRanksFollowOneProcessWithTheirCombinedBatch) {
  std::string dir = loco::testing::temp_dir();
  auto single = loco::testing::run_loco("train --config " + write_config(dir, "single", 1, 4) +
                                        " --set run.dir=" + dir + "/single");
  ASSERT_EQ(single.exit_code, 0) << single.output;
  run_ranks(2, dir, "train --config " + write_config(dir, "ddp", 2, 2));
  ASSERT_FALSE(HasFailure());

  auto one = metrics_of(dir + "/single/metrics.jsonl");
  auto r0 = metrics_of(dir + "/run/metrics.jsonl"),
       r1 = metrics_of(dir + "/run/rank-1/metrics.jsonl");
  ASSERT_EQ(one.size(), 6u);
  ASSERT_EQ(r0.size(), 6u);
  ASSERT_EQ(r1.size(), 6u);
  auto expected = column(one, "loss"), got = column(r0, "loss");
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(got[i], expected[i], 1e-4 * expected[i]) << "step " << i + 1;
    EXPECT_EQ(r1[i].at("loss"), r0[i].at("loss")) << "step " << i + 1;  // both log the mean
    double mean = (r0[i].at("rank_loss").get<double>() + r1[i].at("rank_loss").get<double>()) / 2;
    EXPECT_NEAR(mean, got[i], 1e-9);
    EXPECT_EQ(r1[i].at("param_checksum"), r0[i].at("param_checksum")) << "step " << i + 1;
    EXPECT_NEAR(r0[i].at("grad_norm").get<double>(), one[i].at("grad_norm").get<double>(),
                1e-4 * one[i].at("grad_norm").get<double>());
  }
  EXPECT_NEAR(r0.back().at("val_loss").get<double>(), one.back().at("val_loss").get<double>(),
              1e-4);
  EXPECT_FALSE(r1.back().contains("val_loss"));  // only rank 0 evaluates

  // Bytes: every gradient byte is reduced once per step; a ring of 2 moves it once each way.
  auto ckpt = loco::load_checkpoint(dir + "/run/checkpoints/step_00000006.pt");
  int64_t grad_bytes = ckpt.tensors.at("params").numel() * 4;
  EXPECT_EQ(r0.back().at("allreduce_bytes").get<int64_t>(), grad_bytes);
  EXPECT_EQ(r0.back().at("bytes_up").get<int64_t>(), grad_bytes);
  EXPECT_EQ(r0.back().at("bytes_down").get<int64_t>(), grad_bytes);
  EXPECT_GT(r0.back().at("comm_s").get<double>(), 0.0);
  if (r0.back().contains("wire_bytes_sent")) {
    double wire = r0.back().at("wire_bytes_sent").get<double>();
    EXPECT_NEAR(wire, double(grad_bytes), 0.1 * double(grad_bytes));
  }
  // Rank 0's summary.json: the ring traffic it counted, both ranks, which is what DDP sends by
  // bytes.h's formula; rank 1 writes none.
  auto summary = nlohmann::json::parse(read_text(dir + "/run/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>());
  EXPECT_EQ(summary.at("bytes_up").get<double>(), 6.0 * double(grad_bytes) * 2);
  EXPECT_EQ(summary.at("bytes_total").get<double>(), 2 * 6.0 * double(grad_bytes) * 2);
  EXPECT_EQ(summary.at("ddp_bytes").get<double>(), summary.at("bytes_total").get<double>());
  EXPECT_EQ(summary.at("ratio_vs_ddp").get<double>(), 1.0);
  EXPECT_TRUE(summary.at("ratio_vs_diloco_fp32").is_null());
  EXPECT_EQ(summary.at("tokens"), 2 * r0.back().at("tokens").get<int64_t>());
  EXPECT_FALSE(fs::exists(dir + "/run/rank-1/summary.json"));
  // Rank 0 alone checkpoints (rank 1's checkpoints/ is a link to them), and its final
  // parameters are the single run's.
  EXPECT_TRUE(fs::is_symlink(dir + "/run/rank-1/checkpoints"));
  auto single_ckpt = loco::load_checkpoint(dir + "/single/checkpoints/step_00000006.pt");
  EXPECT_TRUE(
      torch::allclose(ckpt.tensors.at("params"), single_ckpt.tensors.at("params"), 1e-4, 1e-5));
}

TEST_F(DdpTest, WorldOfOneNeedsNoEnvironment) {
  std::string dir = loco::testing::temp_dir();
  auto r = loco::testing::run_command(env_prefix({}) + " " + LOCO_BINARY + " train --config " +
                                      write_config(dir, "ddp", 1, 2) + " --set train.max_steps=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto records = metrics_of(dir + "/run/metrics.jsonl");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records.back().at("bytes_up").get<int64_t>(), 0);  // 2(W-1)/W = 0
  EXPECT_GT(records.back().at("allreduce_bytes").get<int64_t>(), 0);
}

TEST_F(DdpTest, InterruptedRunResumesOnEveryRank) {
  std::string dir = loco::testing::temp_dir();
  std::string config = write_config(dir, "ddp", 2, 2);
  run_ranks(2, dir, "train --config " + config + " --set run.dir=" + dir + "/whole");
  // Both ranks stop at a non-finite loss at step 5; the last checkpoint is step 4.
  auto broken = start_ranks(2, dir, "train --config " + config + " --set run.dir=" + dir + "/parts",
                            {{"LOCO_INJECT_NAN_STEP", "5"}});
  for (const auto& p : broken) EXPECT_EQ(wait_exit(p), 1) << read_text(p.log);
  run_ranks(2, dir, "train --config " + config + " --set run.dir=" + dir + "/parts --resume");
  ASSERT_FALSE(HasFailure());

  for (std::string sub : {"", "/rank-1"}) {
    auto whole = metrics_of(dir + "/whole" + sub + "/metrics.jsonl");
    auto parts = metrics_of(dir + "/parts" + sub + "/metrics.jsonl");
    ASSERT_EQ(whole.size(), 6u) << sub;
    EXPECT_EQ(column(whole, "loss"), column(parts, "loss")) << sub;  // bit for bit
    for (size_t i = 0; i < whole.size(); ++i)  // uint64: exact, not through double
      EXPECT_EQ(whole[i].at("param_checksum").get<uint64_t>(),
                parts[i].at("param_checksum").get<uint64_t>())
          << sub << " step " << i + 1;
  }
  // The resumed run's summary counts the steps before the stop too.
  auto whole = nlohmann::json::parse(read_text(dir + "/whole/summary.json"));
  auto parts = nlohmann::json::parse(read_text(dir + "/parts/summary.json"));
  for (const char* key : {"bytes_up", "bytes_down", "bytes_total", "ddp_bytes", "ratio_vs_ddp"})
    EXPECT_EQ(parts.at(key), whole.at(key)) << key;
}

TEST_F(DdpTest, KilledRankFailsTheOthersWithinTheTimeout) {
  std::string dir = loco::testing::temp_dir();
  auto procs = start_ranks(2, dir,
                           "train --config " + write_config(dir, "ddp", 2, 2) +
                               " --set train.max_steps=100000 --set sync.timeout_s=5");
  // Wait until both ranks train, then kill rank 0 (which also serves the rendezvous store).
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (metrics_of(dir + "/run/rank-1/metrics.jsonl").size() < 2 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(metrics_of(dir + "/run/rank-1/metrics.jsonl").size(), 2u) << read_text(procs[1].log);
  ::kill(procs[0].pid, SIGKILL);
  auto killed = Clock::now();
  int code = wait_exit(procs[1]);
  double waited = std::chrono::duration<double>(Clock::now() - killed).count();
  wait_exit(procs[0]);

  std::string log = read_text(procs[1].log);
  EXPECT_EQ(code, 1) << log;
  EXPECT_LT(waited, 5.0 + 10.0) << log;  // the timeout, and slack for a loaded machine
  EXPECT_NE(log.find("another rank died or stopped answering"), std::string::npos) << log;
  EXPECT_EQ(error_lines(log), 1) << log;
}

TEST_F(DdpTest, HungRankFailsTheOthersAfterTheTimeout) {
  std::string dir = loco::testing::temp_dir();
  auto procs = start_ranks(2, dir,
                           "train --config " + write_config(dir, "ddp", 2, 2) +
                               " --set train.max_steps=100000 --set sync.timeout_s=3");
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (metrics_of(dir + "/run/metrics.jsonl").size() < 2 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(metrics_of(dir + "/run/metrics.jsonl").size(), 2u) << read_text(procs[0].log);
  ::kill(procs[1].pid, SIGSTOP);  // alive, connected, silent
  auto stopped = Clock::now();
  int code = wait_exit(procs[0]);
  double waited = std::chrono::duration<double>(Clock::now() - stopped).count();
  ::kill(procs[1].pid, SIGKILL);
  wait_exit(procs[1]);

  std::string log = read_text(procs[0].log);
  EXPECT_EQ(code, 1) << log;
  EXPECT_GT(waited, 2.0) << log;
  EXPECT_LT(waited, 3.0 + 10.0) << log;
  EXPECT_NE(log.find("another rank died or stopped answering"), std::string::npos) << log;
  EXPECT_NE(log.find("sync.timeout_s is 3 s"), std::string::npos) << log;
  EXPECT_EQ(error_lines(log), 1) << log;
}

TEST_F(DdpTest, BadEnvironmentGetsOneLineErrorAndNonZeroExit) {
  std::string dir = loco::testing::temp_dir();
  std::string train =
      std::string(LOCO_BINARY) + " train --config " + write_config(dir, "ddp", 2, 2);
  BoundPort busy(true);
  std::string port = std::to_string(loco::testing::free_port()),
              busy_port = std::to_string(busy.port);
  struct Case {
    Env env;
    std::string expected;
  };
  std::vector<Case> cases = {
      {{{"RANK", "0"}, {"WORLD_SIZE", "3"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}},
       "WORLD_SIZE=3 but sync.workers is 2: set them equal"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}},
       "RANK=2 is out of range for WORLD_SIZE=2"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", port}},
       "MASTER_ADDR is not set (the address of rank 0, e.g. 127.0.0.1)"},
      {{{"RANK", "0"},
        {"WORLD_SIZE", "2"},
        {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", busy_port}},
       "MASTER_PORT " + busy_port + " is in use"},
      {{}, "sync.workers is 2 but RANK and WORLD_SIZE are not set"},
  };
  for (const auto& c : cases) {
    auto r = loco::testing::run_command(env_prefix(c.env) + " " + train);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << r.output;
    EXPECT_EQ(error_lines(r.output), 1) << r.output;
  }
}

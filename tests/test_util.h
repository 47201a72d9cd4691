// Helpers shared by loco's tests: temporary directories, running the real binary and the
// reference Python scripts, and tensor dumps that Python's torch.load reads.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ftw.h>
#include <functional>
#include <map>
#include <sstream>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <chrono>
#include <thread>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/coordinator.h"
#include "loco/launch.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "loco/optim.h"
#include "loco/prepare.h"

namespace loco::testing {

// Removes a directory tree (nothing if it is missing). Not std::filesystem::remove_all: a pip
// torch's libtorch.so exports a copy of it that jumps to a null pointer (seen with torch 2.11,
// docs/gpu.md), and the tests link that LibTorch.
inline void remove_tree(const std::filesystem::path& dir) {
  auto remove_one = [](const char* path, const struct stat*, int, struct FTW*) {
    return std::remove(path) == 0 ? 0 : -1;
  };
  if (::access(dir.c_str(), F_OK) == 0 &&
      ::nftw(dir.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    throw std::runtime_error("could not remove " + dir.string());
}

// A fresh, empty directory under the system temp dir, named after the running test.
inline std::string temp_dir(const std::string& tag = "") {
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string("loco_") +
                     (info ? info->test_suite_name() + std::string("_") + info->name() : "suite") +
                     tag;
  auto dir = std::filesystem::temp_directory_path() / name;
  remove_tree(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output and exit status.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe))
    result.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The `loco` binary of this build, with arguments.
inline CommandResult run_loco(const std::string& args) {
  return run_command(std::string(LOCO_BINARY) + " " + args);
}

// The code of the CoordError that `f` throws (a test failure when it throws none).
inline loco::CoordError::Code refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const loco::CoordError& e) {
    return e.code;
  }
  ADD_FAILURE() << "expected a refusal";
  return loco::CoordError::kUnavailable;
}

// A whole file as a string ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts `command` (a shell command line) in the background, its output going to `log`.
inline pid_t spawn_shell(const std::string& command, const std::string& log) {
  std::string line = "exec " + command + " > " + log + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
  pid_t pid = -1;
  EXPECT_EQ(::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  return pid;
}

// Waits for a spawned process; its exit code, or 128 + the signal that ended it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs a Python script of the project with Debian's python3-torch.
inline CommandResult run_python(const std::string& script_and_args) {
  return run_command(std::string(LOCO_PYTHON) + " " + LOCO_SOURCE_DIR + "/" + script_and_args);
}

// What tests/golden/read_tfevents.py (an independent TensorBoard event file reader) made of an
// event file or a tb/ directory: its exit code, its output, and the JSON it printed
// ({"files": N, "events": [{"file", "wall_time", "step", "scalars": {tag: value}}]}; null when
// it failed).
struct TbRead {
  int exit_code = -1;
  std::string output;
  nlohmann::json json;
};

inline TbRead read_tb(const std::string& target) {
  auto r = run_python("tests/golden/read_tfevents.py " + target);
  TbRead out{r.exit_code, r.output, nullptr};
  if (r.exit_code == 0) out.json = nlohmann::json::parse(r.output, nullptr, false);
  return out;
}

// A string -> IValue dictionary, as Python's torch.load reads it.
inline c10::impl::GenericDict make_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

inline c10::impl::GenericDict tensor_dict(const std::map<std::string, torch::Tensor>& tensors) {
  auto d = make_dict();
  for (const auto& [k, v] : tensors) d.insert(k, v.detach().clone());
  return d;
}

inline void save_dump(const std::string& path, const c10::impl::GenericDict& dict) {
  auto bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// Tokenizer (vocab 512) and token streams (train.bin, val.bin, with their further shards and
// indexes) prepared once per test process from the shipped corpus sample
// (tests/data/sample.json), in a directory of this process's own. The shards are small (4096
// tokens) so that every training test reads a corpus of several shards.
inline const std::string& prepared_sample() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("loco_sample_" + std::to_string(::getpid()));
    remove_tree(d);
    loco::PrepareOptions opts;
    opts.inputs = {std::string(LOCO_SOURCE_DIR) + "/tests/data/sample.json"};
    opts.out_dir = d.string();
    opts.vocab_size = 512;
    opts.val_permille = 50;
    opts.shard_tokens = 4096;
    loco::prepare_data(opts);
    return d.string();
  }();
  return dir;
}

// YAML for a small, fast model over prepared_sample(), writing into `run_dir`.
inline std::string small_run_yaml(const std::string& run_dir) {
  const std::string& d = prepared_sample();
  return "run: {name: test, dir: " + run_dir + ", seed: 3}\n" + "data: {train: " + d +
         "/train.bin, val: " + d + "/val.bin, tokenizer: " + d + "/tokenizer.model}\n" +
         "model: {n_layer: 2, n_head: 2, n_embd: 64, seq_len: 32, vocab_size: 512}\n" +
         "train: {batch_size: 4, max_steps: 8, eval_every: 4, eval_batches: 2,\n" +
         "        checkpoint_every: 4, log_every: 2, threads: 1,\n" +
         "        schedule: {warmup_steps: 2}}\n";
}

// The message of the ConfigError that `f` throws, or "(no error)".
inline std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const loco::ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// A TCP port on loopback that is free right now.
inline int free_port() {
  return loco::free_port();
}

// A coordinated run (sync.mode diloco or demo) of small_run_yaml() with `workers` workers syncing
// every `inner_steps` steps, its coordinator on a free loopback port.
inline loco::Config coordinated_config(const std::string& run_dir, const std::string& mode,
                                       int64_t workers, int64_t inner_steps) {
  loco::Config c;
  loco::merge_yaml(c, small_run_yaml(run_dir), "test");
  c.sync.mode = loco::mode_from_name(mode);
  c.sync.workers = workers;
  c.sync.inner_steps = inner_steps;
  c.sync.coordinator.address = "127.0.0.1:" + std::to_string(free_port());
  return c;
}

// A coordinated run for the process tests: `workers` workers, `rounds` rounds of `h` steps,
// fast heartbeats and a short lease, evaluation every round.
inline loco::Config process_config(const std::string& run_dir, int64_t workers, int64_t rounds,
                                   int64_t h) {
  loco::Config c = coordinated_config(run_dir, "diloco", workers, h);
  c.train.max_steps = rounds * h;
  c.train.eval_every = h;
  c.train.checkpoint_every = 0;
  c.train.log_every = h;
  c.sync.coordinator.heartbeat_s = 0.2;
  c.sync.coordinator.lease_s = 1.5;
  c.sync.coordinator.round_timeout_s = 60;
  c.sync.coordinator.connect_timeout_s = 60;
  return c;
}

// The newest round in a metrics.jsonl (a coordinator's), 0 while it is missing.
inline int64_t logged_round(const std::string& metrics_path) {
  int64_t round = 0;
  if (!std::filesystem::exists(metrics_path)) return 0;
  for (const auto& r : loco::read_metrics(metrics_path))
    if (r.contains("round")) round = std::max(round, r.at("round").get<int64_t>());
  return round;
}

// Polls until `done` or `timeout_s` passes; whether `done` held.
inline bool wait_until(const std::function<bool()>& done, double timeout_s) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// The model's tensors, as a worker lays them out for the coordinator.
inline std::vector<loco::TensorLayout> model_layout(const loco::Config& c) {
  loco::GPT model(c.model);
  loco::FlatParams flat(*model);
  std::vector<loco::TensorLayout> layout;
  for (const auto& s : flat.slots()) layout.push_back({s.name, s.shape, s.offset, s.numel});
  return layout;
}

// A whole update of zeros for `round` (codec none, 8 tokens), as a worker would push it.
inline loco::Update zero_update(const std::vector<loco::TensorLayout>& layout, int64_t round) {
  auto codec = loco::make_codec(loco::CodecConfig{});
  loco::Update u;
  u.round = round, u.tokens = 8;
  for (const auto& l : layout)
    u.tensors.push_back({l.name, "float32", codec->encode(torch::zeros(l.shape))});
  return u;
}

// Writes `c` (resolved) to dir/config.yaml and returns that path, for `loco ... --config`.
inline std::string write_config(const std::string& dir, const loco::Config& c) {
  std::string path = dir + "/config.yaml";
  std::ofstream(path) << loco::to_yaml(c);
  return path;
}

}  // namespace loco::testing

// `loco bench coordinator` (include/loco/bench.h): a real coordinator process (`loco
// coordinator`, on loopback) and W simulated workers, client threads of this process that push a
// random pseudo-gradient through the workers' own client (src/coord/client.cpp) and pull the
// result, round after round. Prints per round: the time to close it, bytes up and down, the
// coordinator's GB/s of fp32 pseudo-gradients, and its peak RSS (VmHWM).
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "loco/bench.h"
#include "loco/coord_client.h"
#include "loco/launch.h"
#include "loco/model.h"
#include "loco/progress.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

constexpr double kGB = 1e9;

// A GPT shape of about `n` parameters, nanochat's proportions: width 64 x depth, head dim 64
// (128 from width 1024), vocab 65536 from 100M parameters on (so 561M is configs/d20.yaml's
// shape exactly), 4096 below (5M is configs/tiny.yaml's).
ModelConfig shape_for(int64_t n) {
  ModelConfig best;
  best.vocab_size = n >= 100'000'000 ? 65536 : 4096;
  int64_t best_err = -1;
  for (int64_t layers = 1; layers <= 64; ++layers) {
    const int64_t d = 64 * layers;
    const int64_t params = 2 * best.vocab_size * d + 12 * layers * d * d;
    const int64_t err = std::llabs(params - n);
    if (best_err < 0 || err < best_err) {
      best_err = err;
      best.n_layer = layers;
      best.n_embd = d;
      best.n_head = d >= 1024 ? d / 128 : d / 64;
    }
  }
  best.seq_len = 64;  // no parameters depend on it
  return best;
}

int64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return -1;
}

// VmHWM (peak resident set) or VmRSS of a live process, bytes; -1 when it is gone.
int64_t proc_mem(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return -1;
}

std::vector<TensorLayout> layout_of(const ModelConfig& m) {
  GPT model(m);
  std::vector<TensorLayout> layout;
  int64_t offset = 0;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const auto& p = item.value();
    layout.push_back({item.key(), p.sizes().vec(), offset, p.numel()});
    offset += p.numel();
  }
  return layout;
}

std::string coordinator_yaml(const CoordBenchOptions& o, const ModelConfig& m, int port) {
  const std::string dir = (fs::path(o.dir) / "coordinator").string();
  return "run: {name: bench-coordinator, dir: " + dir + ", seed: 1}\n" +
         "data: {train: unused, val: unused, tokenizer: unused}\n" +
         "model: {n_layer: " + std::to_string(m.n_layer) + ", n_head: " + std::to_string(m.n_head) +
         ", n_embd: " + std::to_string(m.n_embd) + ", seq_len: " + std::to_string(m.seq_len) +
         ", vocab_size: " + std::to_string(m.vocab_size) + "}\n" +
         "train: {max_steps: " + std::to_string(o.rounds) +
         ", threads: " + std::to_string(o.threads) + ", keep_checkpoints: 1}\n" +
         "sync:\n  mode: diloco\n  workers: " + std::to_string(o.workers) +
         "\n  inner_steps: 1\n  codec: {type: " + o.codec + "}\n" +
         "  coordinator: {address: '127.0.0.1:" + std::to_string(port) +
         "', evaluate: false, round_timeout_s: 3600, lease_s: 600, min_workers: " +
         std::to_string(o.workers) + ", checkpoint_every: 1000000}\n";
}

std::string fmt_gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GB", bytes / kGB);
  return buf;
}

// This round's update: the same random pseudo-gradient for every worker, encoded once.
Update make_update(const std::vector<TensorLayout>& layout, Codec& codec, int64_t round) {
  Update u;
  u.round = round;
  u.tokens = 1000;
  u.loss = 1.0;
  for (const auto& l : layout) {
    TensorPayload p;
    p.name = l.name;
    auto x = torch::randn(l.shape) * 1e-3;
    p.encoded = codec.encode(x);
    u.tensors.push_back(std::move(p));
  }
  return u;
}

}  // namespace

// The coordinator's memory budget (docs/performance.md) and the bench's own, for a model of
// `params` fp32 values.
CoordBenchEstimate estimate_coordinator_bench(int64_t params, int64_t workers) {
  CoordBenchEstimate e;
  e.coordinator_bytes = 4 * (4 * params) + (int64_t(512) << 20);
  // one encoded update (shared by the simulated workers) and its random source tensor by tensor,
  // plus gRPC's buffers per stream
  e.bench_bytes = 2 * (4 * params) + workers * (int64_t(16) << 20) + (int64_t(256) << 20);
  e.available_bytes = mem_available_bytes();
  return e;
}

int bench_coordinator(const CoordBenchOptions& o, const std::string& loco_binary) {
  if (o.workers < 1 || o.rounds < 1 || o.params < 1000)
    throw ConfigError("loco bench coordinator: --workers and --rounds must be >= 1 and --params " +
                      std::string(">= 1000"));
  const ModelConfig shape = shape_for(o.params);
  // Refuse before anything is allocated: the shape's count, as the model will have it.
  const int64_t d = shape.n_embd;
  const auto est =
      estimate_coordinator_bench(2 * shape.vocab_size * d + 12 * shape.n_layer * d * d, o.workers);
  if (est.available_bytes >= 0 && est.coordinator_bytes + est.bench_bytes > est.available_bytes)
    throw ConfigError("loco bench coordinator: --params " + std::to_string(o.params) +
                      " x --workers " + std::to_string(o.workers) + " needs about " +
                      fmt_gb(double(est.coordinator_bytes + est.bench_bytes)) + " (coordinator " +
                      fmt_gb(double(est.coordinator_bytes)) + " = 4 x " +
                      fmt_gb(double(est.coordinator_bytes - (int64_t(512) << 20)) / 4) +
                      " + 512 MB, bench " + fmt_gb(double(est.bench_bytes)) +
                      "), the machine has " + fmt_gb(double(est.available_bytes)) +
                      " available (/proc/meminfo MemAvailable)");
  const auto layout = layout_of(shape);
  const int64_t n = layout.back().offset + layout.back().numel;
  CodecConfig codec_config;
  codec_config.type = o.codec;
  auto codec = make_codec(codec_config);

  fs::remove_all(o.dir);
  fs::create_directories(o.dir);
  const int port = o.port > 0 ? o.port : free_port();
  const std::string yaml = (fs::path(o.dir) / "coordinator.yaml").string();
  std::ofstream(yaml) << coordinator_yaml(o, shape, port);
  const std::string log = (fs::path(o.dir) / "coordinator.log").string();
  std::printf(
      "model: %lld parameters in %zu tensors (%lld layers, width %lld, vocab %lld), %.2f GB fp32; "
      "%d workers, %d rounds, codec %s\n",
      (long long)n, layout.size(), (long long)shape.n_layer, (long long)shape.n_embd,
      (long long)shape.vocab_size, 4.0 * double(n) / kGB, o.workers, o.rounds, o.codec.c_str());
  std::fflush(stdout);

  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // dies with the bench, however it ends
    FILE* f = std::freopen(log.c_str(), "w", stdout);
    if (f) ::dup2(::fileno(stdout), STDERR_FILENO);
    ::execl(loco_binary.c_str(), loco_binary.c_str(), "coordinator", "--config", yaml.c_str(),
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  TORCH_CHECK(pid > 0, "fork failed");
  struct Reap {  // the coordinator never outlives the bench
    pid_t pid;
    bool done = false;
    ~Reap() {
      if (!done) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
    }
  } reap{pid};

  CoordinatorConfig cc;
  cc.round_timeout_s = 3600;
  cc.connect_timeout_s = 60;
  std::vector<std::unique_ptr<CoordinatorClient>> clients;
  const std::string address = "127.0.0.1:" + std::to_string(port);
  for (int i = 0; i < o.workers; ++i) {
    clients.push_back(std::make_unique<CoordinatorClient>(address, cc));
    clients.back()->join("bench-" + std::to_string(i), n);
  }
  std::atomic<bool> stop{false};
  std::thread heartbeats([&] {
    while (!stop) {
      for (auto& c : clients) try {
          c->heartbeat();
        } catch (const std::exception&) {
        }
      for (int i = 0; i < 20 && !stop; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  std::printf("%5s %9s %9s %11s %11s %12s %10s %10s\n", "round", "close_s", "round_s", "up_MB",
              "down_MB", "coord_GB/s", "rss_MB", "peak_MB");
  std::vector<double> close_times;
  std::string error;
  for (int r = 0; r < o.rounds && error.empty(); ++r) {
    const Update update = make_update(layout, *codec, r);
    std::atomic<uint64_t> up{0}, down{0};
    std::vector<double> pushed(size_t(o.workers), 0);
    std::mutex error_mu;
    const double start = now_s();
    std::vector<std::thread> threads;
    for (int i = 0; i < o.workers; ++i)
      threads.emplace_back([&, i] {
        try {
          up += clients[size_t(i)]->push(update);
          pushed[size_t(i)] = now_s() - start;
          PullResult p = clients[size_t(i)]->pull_chunks(
              r + 1, layout, 3600, [](uint32_t, uint64_t, std::string_view) {});
          down += p.wire_bytes;
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (error.empty()) error = "worker " + std::to_string(i) + ": " + e.what();
        }
      });
    for (auto& t : threads) t.join();
    const double round_s = now_s() - start;
    const double close_s = *std::max_element(pushed.begin(), pushed.end());
    close_times.push_back(close_s);
    const double gbps = double(o.workers) * 4.0 * double(n) / close_s / kGB;
    std::printf("%5d %9.2f %9.2f %11.1f %11.1f %12.2f %10.0f %10.0f\n", r + 1, close_s, round_s,
                double(up) / 1e6, double(down) / 1e6, gbps, double(proc_mem(pid, "VmRSS")) / 1e6,
                double(proc_mem(pid, "VmHWM")) / 1e6);
    std::fflush(stdout);
  }
  const int64_t hwm_before_exit = proc_mem(pid, "VmHWM");
  stop = true;
  heartbeats.join();
  for (auto& c : clients) c->leave();
  int status = 0;
  struct rusage usage {};
  // The coordinator ends once the last round closed and everyone left (writing its final
  // checkpoint); its ru_maxrss is its peak over the whole run, that final write included.
  const double wait_start = now_s();
  pid_t done = 0;
  while ((done = ::wait4(pid, &status, WNOHANG, &usage)) == 0 && now_s() - wait_start < 600)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (done == pid) reap.done = true;
  if (!error.empty())
    throw std::runtime_error("loco bench coordinator: " + error + " (see " + log + ")");
  if (done != pid) throw std::runtime_error("the coordinator did not exit (see " + log + ")");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("the coordinator failed (see " + log + ")");

  // The coordinator's own work (decoding, adding, the outer step) from its metrics.jsonl.
  double work_s = 0, work_bytes = 0;
  std::ifstream metrics(fs::path(o.dir) / "coordinator" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("coord_work_s")) continue;
    work_s += j["coord_work_s"].get<double>();
    work_bytes += j["coord_work_bytes"].get<double>();
  }
  const double peak = double(usage.ru_maxrss) * 1024;
  const double bound = double(est.coordinator_bytes);
  std::sort(close_times.begin(), close_times.end());
  const double median_close = close_times[close_times.size() / 2];
  nlohmann::json out = {{"params", n},
                        {"model_gb", 4.0 * double(n) / kGB},
                        {"workers", o.workers},
                        {"rounds", o.rounds},
                        {"codec", o.codec},
                        {"median_close_s", median_close},
                        {"round_gbps", double(o.workers) * 4.0 * double(n) / median_close / kGB},
                        {"work_gbps", work_s > 0 ? work_bytes / work_s / kGB : 0.0},
                        {"peak_rss_mb", peak / 1e6},
                        {"peak_rss_rounds_mb", double(hwm_before_exit) / 1e6},
                        {"bound_mb", bound / 1e6},
                        {"bench_peak_rss_mb", double(proc_mem(::getpid(), "VmHWM")) / 1e6},
                        {"within_bound", peak <= bound}};
  std::printf(
      "coordinator: median close %.2f s, %.2f GB/s of fp32 pseudo-gradients per round, its own "
      "work (decode, add, step) %.2f GB/s; peak RSS %.0f MB (%.0f MB during the rounds) against "
      "the bound 4 x %.0f MB + 512 MB = %.0f MB: %s\n",
      median_close, out["round_gbps"].get<double>(), out["work_gbps"].get<double>(), peak / 1e6,
      double(hwm_before_exit) / 1e6, 4.0 * double(n) / 1e6, bound / 1e6,
      peak <= bound ? "within" : "OVER");
  std::cout << "json: " << out.dump() << std::endl;
  return 0;
}

}  // namespace loco

// DDP over c10d: bucketed gradient all-reduce every step (see include/loco/ddp.h).
#include "loco/progress.h"
#include "loco/ddp.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "loco/bytes.h"
#include "loco/c10d_compat.h"
#include "loco/checkpoint.h"
#include "loco/link.h"
#include "loco/metrics.h"
#include "loco/trainer.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

// Bytes this process has written through write()/writev() so far (Linux's /proc/self/io
// "wchar"), -1 where unavailable. Gloo's TCP transport sends with writev, so the difference
// across an all-reduce is what went onto its sockets.
int64_t bytes_written_so_far() {
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (io >> key >> value)
    if (key == "wchar:") return value;
  return -1;
}

std::string rank_device(const Config& config, const DistEnv& env) {
  const std::string& device = config.train.device;
  return device == "cuda" ? "cuda:" + std::to_string(env.local_rank) : device;
}

class DdpSync : public Sync {
 public:
  // `link`: a slow link between the ranks, modelled after each all-reduce (include/loco/link.h).
  DdpSync(std::shared_ptr<ProcessGroup> group, int64_t bucket_bytes, const LinkConfig& link)
      : group_(std::move(group)), bucket_bytes_(bucket_bytes), link_(link) {
    if (link_.limited())
      link_record_ = {{"mbps", link.mbps},
                      {"latency_ms", link.latency_ms},
                      {"shaping", "modelled"},
                      {"bandwidth", "slept per step: 2(W-1)/W x bytes x 8 / rate"},
                      {"latency", "slept per step: 2(W-1) x latency_ms (the ring's steps)"}};
  }

  void start(Trainer& trainer) override {
    torch::NoGradGuard no_grad;
    group_->broadcast(trainer.params().data(), 0);
    const auto& grad = trainer.params().grad();
    int64_t bytes = grad.numel() * int64_t(grad.element_size());
    spdlog::info("ddp: rank {} of {} over {}; {:.1f} MB of gradients per step in {} bucket(s)",
                 group_->rank(), group_->size(), group_->backend(), bytes / 1e6,
                 (bytes + bucket_bytes_ - 1) / bucket_bytes_);
  }

  void after_backward(Trainer& trainer) override {
    auto& grad = trainer.params().grad();
    int64_t element = int64_t(grad.element_size());
    auto buckets = grad.split(std::max<int64_t>(1, bucket_bytes_ / element));
    int64_t written = group_->backend() == "gloo" ? bytes_written_so_far() : -1;
    double start = now_s();
    group_->all_reduce_sum(buckets);
    grad.div_(double(group_->size()));
    wire_sent_ = written < 0 ? -1 : bytes_written_so_far() - written;
    reduced_bytes_ = 0;
    for (const auto& b : buckets) reduced_bytes_ += b.numel() * element;
    // Gloo's sockets cannot be paced from here: the step waits what the link would have taken.
    link_s_ = ddp_link_seconds(link_, reduced_bytes_, group_->size());
    if (link_s_ > 0) std::this_thread::sleep_for(std::chrono::duration<double>(link_s_));
    comm_s_ = now_s() - start;
  }

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    double rank_loss = record.at("loss").get<double>();
    auto options = torch::dtype(torch::kFloat64).device(trainer.device());
    std::vector<torch::Tensor> loss{torch::full({1}, rank_loss, options)};
    group_->all_reduce_sum(loss);
    int64_t w = group_->size();
    double ring = 2.0 * double(w - 1) / double(w) * double(reduced_bytes_);
    record["loss"] = loss[0].item<double>() / double(w);
    record["rank_loss"] = rank_loss;
    record["allreduce_bytes"] = reduced_bytes_;
    record["bytes_up"] = std::llround(ring);
    record["bytes_down"] = std::llround(ring);
    record["comm_s"] = comm_s_;
    if (wire_sent_ >= 0) record["wire_bytes_sent"] = wire_sent_;
    if (!link_record_.is_null()) {
      record["link"] = link_record_;
      record["link_s"] = link_s_;  // of comm_s: the modelled link's share
    }
    record["param_checksum"] = param_checksum(trainer.params().data());
  }

  bool is_primary() const override { return group_->rank() == 0; }

  // The ring traffic rank 0 logged, every step of the run (a resumed run's earlier steps are
  // still in its metrics.jsonl), and what DDP sends by bytes.h's formula for as many steps.
  nlohmann::json summary(Trainer& trainer) override {
    double up = 0, down = 0;
    int64_t steps = 0;
    for (const auto& r : read_metrics(trainer.metrics_path())) {
      if (!r.contains("bytes_up")) continue;
      ++steps, up += r["bytes_up"].get<double>(), down += r.value("bytes_down", 0.0);
    }
    const int64_t w = group_->size();
    auto out = ddp_run_bytes(trainer.params().numel(), w, steps, up, down);
    out["tokens"] = trainer.tokens() * w;
    if (!link_record_.is_null()) out["link"] = link_record_;
    return out;
  }

 private:
  std::shared_ptr<ProcessGroup> group_;
  int64_t bucket_bytes_;
  LinkConfig link_;
  nlohmann::json link_record_;  // null: unlimited
  int64_t reduced_bytes_ = 0, wire_sent_ = -1;
  double comm_s_ = 0, link_s_ = 0;
};

}  // namespace

std::shared_ptr<ProcessGroup> open_process_group(const Config& config, const DistEnv& env) {
  auto timeout = std::chrono::milliseconds(std::llround(config.sync.timeout_s * 1e3));
  return ProcessGroup::create(env, resolve_device(rank_device(config, env)), timeout);
}

namespace {

std::unique_ptr<Sync> ddp_sync(const Config& config, std::shared_ptr<ProcessGroup> group,
                               const LinkConfig& link) {
  int64_t bucket_bytes =
      std::max<int64_t>(1, std::llround(config.sync.bucket_mb * 1024.0 * 1024.0));
  return std::make_unique<DdpSync>(std::move(group), bucket_bytes, link);
}

}  // namespace

// Inside a site (multi-site) the ranks share a fast interconnect: no link there.
std::unique_ptr<Sync> make_ddp_sync(const Config& config, std::shared_ptr<ProcessGroup> group) {
  return ddp_sync(config, std::move(group), LinkConfig{});
}

// Plain DDP: sync.link is between the ranks.
std::unique_ptr<Sync> make_ddp_sync(const Config& config, const DistEnv& env) {
  const LinkConfig link = config.sync.sites.empty() ? config.sync.link : LinkConfig{};
  return ddp_sync(config, open_process_group(config, env), link);
}

Config ddp_rank_config(const Config& config, const DistEnv& env) {
  Config out = config;
  out.train.device = rank_device(config, env);
  out.train.eval_batches = config.train.eval_batches * env.world_size;
  if (env.rank == 0) return out;
  fs::path dir = fs::path(config.run.dir) / ("rank-" + std::to_string(env.rank));
  fs::create_directories(dir);
  fs::path link = dir / "checkpoints";
  if (!fs::exists(fs::symlink_status(link))) fs::create_directory_symlink("../checkpoints", link);
  out.run.dir = dir.string();
  return out;
}

}  // namespace loco

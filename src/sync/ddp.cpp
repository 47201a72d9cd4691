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

#include "loco/c10d_compat.h"
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
  DdpSync(std::shared_ptr<ProcessGroup> group, int64_t bucket_bytes)
      : group_(std::move(group)), bucket_bytes_(bucket_bytes) {}

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
    comm_s_ = now_s() - start;
    wire_sent_ = written < 0 ? -1 : bytes_written_so_far() - written;
    reduced_bytes_ = 0;
    for (const auto& b : buckets) reduced_bytes_ += b.numel() * element;
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
    record["param_checksum"] = param_checksum(trainer.params().data());
  }

  bool is_primary() const override { return group_->rank() == 0; }

 private:
  std::shared_ptr<ProcessGroup> group_;
  int64_t bucket_bytes_;
  int64_t reduced_bytes_ = 0, wire_sent_ = -1;
  double comm_s_ = 0;
};

}  // namespace

int64_t param_checksum(const torch::Tensor& data) {
  return data.view(torch::kInt32).sum(torch::kInt64).item<int64_t>();
}

std::shared_ptr<ProcessGroup> open_process_group(const Config& config, const DistEnv& env) {
  auto timeout = std::chrono::milliseconds(std::llround(config.sync.timeout_s * 1e3));
  return ProcessGroup::create(env, resolve_device(rank_device(config, env)), timeout);
}

std::unique_ptr<Sync> make_ddp_sync(const Config& config, std::shared_ptr<ProcessGroup> group) {
  int64_t bucket_bytes =
      std::max<int64_t>(1, std::llround(config.sync.bucket_mb * 1024.0 * 1024.0));
  return std::make_unique<DdpSync>(std::move(group), bucket_bytes);
}

std::unique_ptr<Sync> make_ddp_sync(const Config& config, const DistEnv& env) {
  return make_ddp_sync(config, open_process_group(config, env));
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

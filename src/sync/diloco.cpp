// DiLoCo on the worker: pseudo-gradient up, global parameters down (see include/loco/diloco.h).
#include "loco/progress.h"
#include "loco/diloco.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>

#include "loco/codec.h"
#include "loco/shard.h"
#include "loco/trainer.h"

namespace loco {
namespace {

class DilocoSync : public Sync {
 public:
  DilocoSync(const Config& config, std::shared_ptr<CoordinatorClient> client, const JoinInfo& join)
      : config_(config),
        client_(std::move(client)),
        round_(join.round),
        site_ranks_(join.site_ranks),
        codec_(make_codec(config.sync.codec)) {
    if (config.sync.codec.type != "none" && config.sync.codec.error_feedback)
      feedback_ = std::make_unique<ErrorFeedback>(*codec_);
  }

  ~DilocoSync() override { stop_heartbeats(); }

  void start(Trainer& trainer) override {
    for (const auto& s : trainer.params().slots())
      layout_.push_back({s.name, s.shape, s.offset, s.numel});
    PullResult r = client_->pull(round_, layout_, trainer.params().data(), pull_timeout());
    theta_start_ = trainer.params().data().clone();
    round_tokens_start_ = trainer.tokens();
    spdlog::info("worker {}: pulled the global state of round {} ({} bytes)", client_->worker_id(),
                 r.round, r.wire_bytes);
    heartbeats_ = std::thread([this] { heartbeat_loop(); });
  }

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    loss_sum_ += record.at("loss").get<double>();
    ++loss_count_;
    if (trainer.step() % config_.sync.inner_steps != 0) return;
    double start = now_s();
    Update update = make_update(trainer);
    uint64_t up = client_->push(std::move(update));
    double pull_start = now_s();
    PullResult down = client_->pull(round_ + 1, layout_, trainer.params().data(), pull_timeout());
    double pull_s = now_s() - pull_start;
    theta_start_.copy_(trainer.params().data());
    round_ = down.round;
    round_tokens_start_ = trainer.tokens();
    loss_sum_ = 0, loss_count_ = 0;
    record["round"] = round_;
    record["bytes_up"] = up;
    record["bytes_down"] = down.wire_bytes;
    record["sync_s"] = now_s() - start;
    record["idle_s"] = down.wait_s;
    record["pull_s"] = pull_s;
    record["worker"] = client_->worker_id();
    // Every replica must hold the same parameters after a sync; the checksum lets anyone check.
    auto& p = trainer.params().data();
    auto host = p.to(torch::kCPU).contiguous();
    record["param_checksum"] = fnv1a64(host.data_ptr(), size_t(host.numel()) * 4);
  }

  void finish(Trainer&) override {
    stop_heartbeats();
    client_->leave();
  }

 private:
  Update make_update(Trainer& trainer) {
    torch::NoGradGuard no_grad;
    auto delta = theta_start_ - trainer.params().data();
    Update u;
    u.round = round_;
    u.tokens = (trainer.tokens() - round_tokens_start_) * site_ranks_;
    u.loss = loss_count_ ? loss_sum_ / double(loss_count_) : 0.0;
    for (const auto& l : layout_) {
      auto x = delta.narrow(0, l.offset, l.numel).view(l.shape);
      TensorPayload t;
      t.name = l.name;
      t.encoded = feedback_ ? feedback_->encode(l.name, x) : codec_->encode(x);
      u.tensors.push_back(std::move(t));
    }
    return u;
  }

  double pull_timeout() const { return 2 * config_.sync.coordinator.round_timeout_s + 60; }

  void heartbeat_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    auto period = std::chrono::duration<double>(config_.sync.coordinator.heartbeat_s);
    while (!cv_.wait_for(lock, period, [this] { return stopping_; })) {
      lock.unlock();
      try {
        client_->heartbeat();
      } catch (const std::exception& e) {
        spdlog::warn("worker: heartbeat failed: {}", e.what());
      }
      lock.lock();
    }
  }

  void stop_heartbeats() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (heartbeats_.joinable()) heartbeats_.join();
  }

  Config config_;
  std::shared_ptr<CoordinatorClient> client_;
  int64_t round_, site_ranks_;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<ErrorFeedback> feedback_;
  std::vector<TensorLayout> layout_;
  torch::Tensor theta_start_;
  int64_t round_tokens_start_ = 0, loss_count_ = 0;
  double loss_sum_ = 0;
  std::thread heartbeats_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<Sync> make_diloco_sync(const Config& config,
                                       std::shared_ptr<CoordinatorClient> client,
                                       const JoinInfo& join) {
  return std::make_unique<DilocoSync>(config, std::move(client), join);
}

}  // namespace loco

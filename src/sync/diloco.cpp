// DiLoCo and the decoupled DCT method on the worker: the round's update up, what the coordinator
// serves back down (see include/loco/diloco.h).
#include "loco/progress.h"
#include "loco/diloco.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <optional>
#include <thread>

#include "loco/codec.h"
#include "loco/optim.h"
#include "loco/checkpoint.h"
#include "loco/trainer.h"

namespace loco {

Encoded demo_compress(torch::Tensor& m, const torch::Tensor& delta, double beta, Codec& dct) {
  torch::NoGradGuard no_grad;
  m.mul_(beta).add_(delta);
  Encoded e = dct.encode(m);
  m.sub_(dct.decode(e).to(m.device()).view(m.sizes()));
  return e;
}

torch::Tensor demo_apply(torch::Tensor& m, const torch::Tensor& theta_start,
                         const torch::Tensor& delta, const Encoded& merged, double beta, double lr,
                         const Codec& dct) {
  torch::NoGradGuard no_grad;
  m.add_(dct.decode(merged).to(m.device()).view(m.sizes()));
  return theta_start - lr * (delta + beta * m);
}

namespace {

uint64_t checksum(const torch::Tensor& flat) {
  return param_checksum(flat);
}

class CoordinatedSync : public Sync {
 public:
  CoordinatedSync(const Config& config, std::shared_ptr<CoordinatorClient> client,
                  const JoinInfo& join)
      : config_(config),
        client_(std::move(client)),
        round_(join.round),
        site_ranks_(join.site_ranks),
        cursor_tokens_(join.cursor_tokens),
        shard_(join.shard),
        demo_(config.sync.mode == "demo"),
        download_update_(downloads_update(config.sync)),
        codec_(make_codec(config.sync.codec)) {
    if (!demo_ && config.sync.codec.type != "none" && config.sync.codec.error_feedback)
      feedback_ = std::make_unique<ErrorFeedback>(*codec_);
    const int64_t h = config.sync.inner_steps, every = config.train.eval_every;
    consensus_every_ = every > 0 ? std::max<int64_t>(1, every / h) : 0;
  }

  ~CoordinatedSync() override { stop_heartbeats(); }

  void start(Trainer& trainer) override {
    for (const auto& s : trainer.params().slots())
      layout_.push_back({s.name, s.shape, s.offset, s.numel});
    auto& params = trainer.params().data();
    if (download_update_ && !demo_)
      outer_ = std::make_unique<OuterNesterov>(config_.sync.outer.lr, config_.sync.outer.momentum,
                                               params);
    if (round_ > 0 && site_ranks_ > 1)
      throw std::runtime_error("round " + std::to_string(round_) +
                               " is under way: a site of several ranks cannot join a run midway");
    // A worker joining midway may wait a whole round for its first state: keep the lease.
    heartbeats_ = std::thread([this] { heartbeat_loop(); });
    PullResult r = pull_params(params, /*velocity=*/outer_ && round_ > 0);
    theta_start_ = params.clone();
    if (demo_) momentum_ = torch::zeros_like(params);
    if (round_ > 0 || cursor_tokens_ > 0)
      trainer.set_position(round_ * config_.sync.inner_steps,
                           cursor_after(trainer, cursor_tokens_));
    round_tokens_start_ = trainer.tokens();
    spdlog::info("worker {}: pulled the global state of round {} ({} bytes); from step {}",
                 client_->worker_id(), r.round, r.wire_bytes, trainer.step());
    if (!client_->link_record().is_null())
      spdlog::info("worker {}: slow link {}", client_->worker_id(), client_->link_record().dump());
  }

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    loss_sum_ += record.at("loss").get<double>();
    ++loss_count_;
    if (trainer.step() % config_.sync.inner_steps != 0) return;
    torch::NoGradGuard no_grad;
    auto& params = trainer.params().data();
    double start = now_s(), codec_s = 0, pull_start = 0, link_start = client_->link_wait_s();
    uint64_t up = 0;
    PullResult down;
    try {
      up = client_->push(make_update(trainer, &codec_s));
      pull_start = now_s();
      if (!download_update_) {
        down = client_->pull(round_ + 1, layout_, params, pull_timeout());
      } else {
        std::vector<Encoded> aggregate;
        down = client_->pull_aggregate(round_ + 1, layout_, aggregate, pull_timeout());
        double t = now_s();
        demo_ ? apply_merged(params, aggregate) : replay_outer_step(params, aggregate);
        codec_s += now_s() - t;
      }
    } catch (const RpcError& e) {
      if (e.code == RpcError::kOther || site_ranks_ > 1) throw;
      recover(trainer, e, record);
      return;
    }
    double pull_s = now_s() - pull_start;
    round_ = down.round;
    // Every replica's checksum goes into the metrics; a replaying worker also checks it against
    // the coordinator's. One pass over the parameters unless they change again below.
    uint64_t sum = checksum(params);
    if (!demo_ && download_update_ && sum != down.checksum) {
      spdlog::warn(
          "worker {}: parameters differ from the coordinator's after round {}; "
          "resyncing in full",
          client_->worker_id(), round_);
      down.wire_bytes += pull_params(params, /*velocity=*/true).wire_bytes;
      record["resynced"] = true;
      sum = checksum(params);
    }
    if (demo_ && consensus_due(round_)) {
      exchange_state(params, record);
      if (resync_due(round_)) sum = checksum(params);  // adopted the consensus
    }
    theta_start_.copy_(params);
    round_tokens_start_ = trainer.tokens();
    loss_sum_ = 0, loss_count_ = 0;
    record["round"] = round_;
    record["bytes_up"] = up;
    record["bytes_down"] = down.wire_bytes;
    record["sync_s"] = now_s() - start;
    record["idle_s"] = down.wait_s;
    record["pull_s"] = pull_s;
    record["codec_s"] = codec_s;
    if (!client_->link_record().is_null()) {
      record["link"] = client_->link_record();
      record["link_s"] = client_->link_wait_s() - link_start;  // slept for the link this round
    }
    record["worker"] = client_->worker_id();
    // DiLoCo replicas hold the same parameters after a sync; the checksum lets anyone check.
    record["param_checksum"] = sum;
  }

  void finish(Trainer&) override {
    stop_heartbeats();
    client_->leave();
  }

 private:
  // The round went on without this worker: its push came too late (a straggler), the coordinator
  // restarted from a checkpoint, or it dropped this worker. Takes the coordinator's current state
  // (rejoining first unless merely late), moves the trainer to that round and, on a rejoin, to
  // the data its shard has not contributed yet. This round's own work is discarded.
  void recover(Trainer& trainer, const RpcError& first, nlohmann::json& record) {
    auto& params = trainer.params().data();
    std::optional<LoaderCursor> cursor;
    const double give_up = now_s() + config_.sync.coordinator.connect_timeout_s;
    bool rejoin = first.code != RpcError::kFailedPrecondition;
    spdlog::warn("worker {}: {}; {}", client_->worker_id(), first.what(),
                 rejoin ? "joining again" : "taking the current state");
    while (true) {
      try {
        if (rejoin) {
          JoinInfo j = client_->rejoin();  // retries while the coordinator is unreachable
          if (j.shard != shard_)
            throw std::runtime_error("the coordinator gave data shard " + std::to_string(j.shard) +
                                     " to this worker, which reads shard " +
                                     std::to_string(shard_) + " (another worker took it)");
          round_ = j.round;
          cursor = cursor_after(trainer, j.cursor_tokens);
        } else {
          ++round_;  // the round this push was for has closed: the next state exists
        }
        PullResult r = pull_params(params, /*velocity=*/outer_ != nullptr);
        round_ = r.round;
        break;
      } catch (const RpcError& e) {
        if (e.code == RpcError::kOther || now_s() > give_up) throw;
        spdlog::warn("worker {}: {}; joining again", client_->worker_id(), e.what());
        rejoin = true;
      }
    }
    if (feedback_) feedback_->residuals().clear();  // what it kept belongs to discarded work
    if (demo_) momentum_.zero_();
    trainer.set_position(round_ * config_.sync.inner_steps, cursor);
    theta_start_.copy_(params);
    round_tokens_start_ = trainer.tokens();
    loss_sum_ = 0, loss_count_ = 0;
    spdlog::info("worker {}: continues at round {} (step {})", client_->worker_id(), round_,
                 trainer.step());
    record["round"] = round_;
    record["recovered"] = rejoin ? "rejoined" : "late";
    record["worker"] = client_->worker_id();
    record["param_checksum"] = checksum(params);
  }

  // Where this worker's data stream continues after its shard contributed `tokens` tokens.
  LoaderCursor cursor_after(Trainer& trainer, int64_t tokens) const {
    const int64_t windows = tokens / (site_ranks_ * config_.model.seq_len);
    const int64_t per_epoch = std::max<int64_t>(1, trainer.loader().windows_per_epoch());
    return {windows / per_epoch, windows % per_epoch};
  }

  PullResult pull_params(torch::Tensor& params, bool velocity) {
    if (!velocity) return client_->pull(round_, layout_, params, pull_timeout());
    auto both = torch::empty({2 * params.numel()}, params.options());
    PullResult r = client_->pull(round_, layout_, both, pull_timeout(), PullKind::kParams,
                                 /*with_velocity=*/true);
    params.copy_(both.narrow(0, 0, params.numel()));
    outer_->velocity().copy_(both.narrow(0, params.numel(), params.numel()));
    return r;
  }

  // diloco: the encoded delta (with error feedback); demo: the top-k of the momentum's DCT.
  Update make_update(Trainer& trainer, double* codec_s) {
    delta_ = theta_start_ - trainer.params().data();
    Update u;
    u.round = round_;
    u.tokens = (trainer.tokens() - round_tokens_start_) * site_ranks_;
    u.loss = loss_count_ ? loss_sum_ / double(loss_count_) : 0.0;
    double t = now_s();
    for (const auto& l : layout_) {
      auto x = delta_.narrow(0, l.offset, l.numel).view(l.shape);
      TensorPayload p;
      p.name = l.name;
      if (demo_) {
        auto m = momentum_.narrow(0, l.offset, l.numel).view(l.shape);
        p.encoded = demo_compress(m, x, config_.sync.outer.momentum, *codec_);
      } else {
        p.encoded = feedback_ ? feedback_->encode(l.name, x) : codec_->encode(x);
      }
      u.tensors.push_back(std::move(p));
    }
    *codec_s += now_s() - t;
    return u;
  }

  // diloco, download update: theta = theta_start, then the coordinator's outer step on the
  // decoded average, bit for bit.
  void replay_outer_step(torch::Tensor& params, const std::vector<Encoded>& aggregate) {
    for (size_t i = 0; i < layout_.size(); ++i)
      delta_.narrow(0, layout_[i].offset, layout_[i].numel)
          .copy_(decode_checked(aggregate[i], i).reshape({-1}));
    params.copy_(theta_start_);
    outer_->step(params, delta_);
  }

  // demo: m += IDCT(merged); theta = theta_start - lr (delta + beta m), tensor by tensor.
  void apply_merged(torch::Tensor& params, const std::vector<Encoded>& merged) {
    const auto& o = config_.sync.outer;
    for (size_t i = 0; i < layout_.size(); ++i) {
      const auto& l = layout_[i];
      auto m = momentum_.narrow(0, l.offset, l.numel).view(l.shape);
      try {
        params.narrow(0, l.offset, l.numel)
            .copy_(demo_apply(m, theta_start_.narrow(0, l.offset, l.numel).view(l.shape),
                              delta_.narrow(0, l.offset, l.numel).view(l.shape), merged[i],
                              o.momentum, o.lr, *codec_)
                       .reshape({-1}));
      } catch (const CodecError& e) {
        throw std::runtime_error("coordinator's aggregate for '" + l.name + "': " + e.what());
      }
    }
  }

  torch::Tensor decode_checked(const Encoded& e, size_t i) const {
    try {
      return codec_->decode(e).to(delta_.device());
    } catch (const CodecError& err) {
      throw std::runtime_error("coordinator's aggregate for '" + layout_[i].name +
                               "': " + err.what());
    }
  }

  // demo: the rounds whose replicas are averaged (evaluation, the exported model, resync).
  bool consensus_due(int64_t round) const {
    const int64_t rounds = config_.train.max_steps / config_.sync.inner_steps;
    return round == rounds || (consensus_every_ > 0 && round % consensus_every_ == 0) ||
           resync_due(round);
  }
  bool resync_due(int64_t round) const {
    return config_.sync.resync_every > 0 && round % config_.sync.resync_every == 0;
  }

  // demo: push this replica's parameters for the consensus; on resync rounds adopt it.
  void exchange_state(torch::Tensor& params, nlohmann::json& record) {
    auto none = make_codec(CodecConfig{});
    Update u;
    u.kind = Update::kState;
    u.round = round_;
    for (const auto& l : layout_)
      u.tensors.push_back(
          {l.name, "float32", none->encode(params.narrow(0, l.offset, l.numel).view(l.shape))});
    uint64_t up = client_->push(std::move(u));
    if (!resync_due(round_)) {
      record["consensus_bytes_up"] = up;
      return;
    }
    PullResult r = client_->pull(round_, layout_, params, pull_timeout(), PullKind::kConsensus);
    record["resync_bytes"] = up + r.wire_bytes;
  }

  double pull_timeout() const { return 2 * config_.sync.coordinator.round_timeout_s + 60; }

  // Renews the lease. Failures are logged when they start and when they end, not every beat.
  void heartbeat_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    auto period = std::chrono::duration<double>(config_.sync.coordinator.heartbeat_s);
    int failing = 0;
    while (!cv_.wait_for(lock, period, [this] { return stopping_; })) {
      lock.unlock();
      try {
        client_->heartbeat();
        if (failing) spdlog::info("worker: heartbeats go through again (after {} failed)", failing);
        failing = 0;
      } catch (const std::exception& e) {
        if (!failing++) spdlog::warn("worker: heartbeat failed: {}; retrying quietly", e.what());
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
  int64_t round_, site_ranks_, cursor_tokens_;
  int32_t shard_;
  const bool demo_, download_update_;
  int64_t consensus_every_ = 0;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<ErrorFeedback> feedback_;  // diloco with a lossy codec
  std::unique_ptr<OuterNesterov> outer_;     // diloco, download update: the replayed outer step
  std::vector<TensorLayout> layout_;
  torch::Tensor theta_start_, delta_;
  torch::Tensor momentum_;  // demo: this worker's outer momentum m
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
  return std::make_unique<CoordinatedSync>(config, std::move(client), join);
}

}  // namespace loco

// The shared part of the coordinator's worker strategies (see coordinated.h): start-up and the
// first pull, the round's skeleton, recovery, heartbeats; and make_coordinated_sync, the one place
// that maps sync.mode to a strategy.
#include "coordinated.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>

#include "loco/checkpoint.h"
#include "loco/diloco.h"
#include "loco/progress.h"
#include "loco/shard.h"
#include "loco/trainer.h"

namespace loco {

CoordinatedSync::CoordinatedSync(const Config& config, std::shared_ptr<CoordinatorClient> client,
                                 const JoinInfo& join)
    : config_(config),
      client_(std::move(client)),
      round_(join.round),
      download_update_(downloads_update(config.sync)),
      codec_(make_codec(config.sync.codec)),
      site_ranks_(join.site_ranks),
      shard_(join.shard),
      elastic_(elastic_rounds(config.sync)),
      lone_(config.sync.lone == "train") {}

CoordinatedSync::~CoordinatedSync() {
  stop_heartbeats();
  if (client_) client_->set_data_source(nullptr);
}

void CoordinatedSync::start(Trainer& trainer) {
  for (const auto& s : trainer.params().slots())
    layout_.push_back({s.name, s.shape, s.offset, s.numel});
  auto& params = trainer.params().data();
  prepare(params);
  // A worker joining midway may wait a whole round for its first state: keep the lease.
  heartbeats_ = std::thread([this] { heartbeat_loop(); });
  const bool with_velocity = velocity().defined() && round_ > 0;
  bool exact = false;
  PullResult r;
  if (own_) {  // restarted with --resume: the global state apart, to check against its own
    torch::Tensor global = torch::empty_like(params);
    r = pull_params(global, with_velocity);
    exact = resume_exactly(trainer, global);
    if (!exact) params.copy_(global);
    theta_start_ = global;
  } else {
    r = pull_params(params, with_velocity);
    theta_start_ = params.clone();
  }
  if (round_ > 0 && !exact) {
    int64_t step = round_ * round_steps(config_.sync);
    if (elastic_) step = progress_step(client_->status().tokens);
    trainer.set_position(step, std::nullopt);
  }
  // The data comes in leases from the coordinator (docs/data.md); Leave reports how far it got.
  DataLoader& loader = trainer.loader();
  client_->set_data_source([&loader] { return loader.stop_reading(); });
  if (site_ranks_ == 1) loader.set_refill([this](DataLoader& l) { claim_data(l); });
  if (exact) {
    resume_data(loader);
  } else {
    claim_data(loader);
    round_tokens_start_ = trainer.tokens();
  }
  round_start_s_ = now_s();
  round_start_step_ = trainer.step();
  own_.reset();  // its optimizer state is the size of the model, twice over: not kept
  spdlog::info("worker {}: pulled the global state of round {} ({} bytes); from step {}{}",
               client_->worker_id(), r.round, r.wire_bytes, trainer.step(),
               exact ? ", exactly where its checkpoint left it" : "");
  if (!client_->link_record().is_null())
    spdlog::info("worker {}: slow link {}", client_->worker_id(), client_->link_record().dump());
}

bool CoordinatedSync::ends_run(const PullResult& down) {
  if (down.last_round > 0 && down.round >= down.last_round) run_over_ = true;
  return run_over_;
}

void CoordinatedSync::after_step(Trainer& trainer, nlohmann::json& record) {
  loss_sum_ += record.at("loss").get<double>();
  ++loss_count_;
  if (stop_ && stop_->requested) return hand_over(trainer, record);
  if (!round_ends(trainer)) return;
  if (lone_ && train_alone(trainer, record)) return;
  torch::NoGradGuard no_grad;
  auto& params = trainer.params().data();
  double start = now_s(), codec_s = 0, pull_start = 0, link_start = client_->link_wait_s();
  uint64_t up = 0;
  PullResult down;
  try {
    up = client_->push(make_update(trainer, &codec_s));
    pull_start = now_s();
    down = download(params, &codec_s);
    if (trainer.step() < config_.train.max_steps && !ends_run(down))
      claim_data(trainer.loader());  // next round's
  } catch (const RpcError& e) {
    if (e.code == RpcError::kOther || site_ranks_ > 1) throw;
    recover(trainer, e, record);
    return;
  }
  double pull_s = now_s() - pull_start;
  round_ = down.round;
  // Every replica's checksum goes into the metrics; the method may check it against the
  // coordinator's, or change the parameters again (then it sums them again).
  uint64_t sum = param_checksum(params);
  after_round(trainer, params, down, sum, record);
  start_round(trainer);
  if (elastic_) follow_run(trainer);
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

void CoordinatedSync::finish(Trainer&) {
  stop_heartbeats();
  client_->leave();
  client_->set_data_source(nullptr);  // the loader goes with the trainer
}

// Reports how far this worker read its lease and takes the next one: a round's worth of windows
// for the whole site (its ranks split each step's share).
void CoordinatedSync::claim_data(DataLoader& loader, int64_t round) {
  const auto& t = config_.train;
  const int64_t want = round_steps(config_.sync) * t.grad_accum * t.batch_size * site_ranks_;
  const int64_t consumed = loader.leased() ? loader.lease_offset() : 0;
  DataLease next =
      client_->claim_data(loader.lease().id, consumed, want, loader.total_windows(), {}, round);
  loader.set_lease(next, 0, 0, site_ranks_);
}

void CoordinatedSync::refill_data(Trainer& trainer) {
  claim_data(trainer.loader());
}

PullResult CoordinatedSync::pull_params(torch::Tensor& params, bool with_velocity) {
  if (!with_velocity) return client_->pull(round_, layout_, params, pull_timeout());
  torch::Tensor v = velocity();
  auto both = torch::empty({2 * params.numel()}, params.options());
  PullResult r = client_->pull(round_, layout_, both, pull_timeout(), PullKind::kParams,
                               /*with_velocity=*/true);
  params.copy_(both.narrow(0, 0, params.numel()));
  v.copy_(both.narrow(0, params.numel(), params.numel()));
  return r;
}

uint64_t CoordinatedSync::check_replay(torch::Tensor& global, uint64_t sum, PullResult& down,
                                       nlohmann::json& record) {
  if (sum == down.checksum) return sum;
  spdlog::warn(
      "worker {}: parameters differ from the coordinator's after round {}; resyncing in full",
      client_->worker_id(), down.round);
  down.wire_bytes += pull_params(global, /*with_velocity=*/true).wire_bytes;
  record["resynced"] = true;
  return param_checksum(global);
}

std::runtime_error CoordinatedSync::bad_aggregate(size_t i, const CodecError& e) const {
  return std::runtime_error("coordinator's aggregate for '" + layout_[i].name + "': " + e.what());
}

// The round's header (tokens, mean loss) and one payload per tensor of delta_, encoded by the
// method.
Update CoordinatedSync::make_update(Trainer& trainer, double* codec_s) {
  const torch::Tensor& params = trainer.params().data();
  const bool keep = keeps_delta();
  delta_ = keep ? theta_start_ - params : torch::Tensor();
  Update u;
  u.round = round_;
  u.tokens = (trainer.tokens() - round_tokens_start_) * site_ranks_;
  u.loss = loss_count_ ? loss_sum_ / double(loss_count_) : 0.0;
  double t = now_s();
  for (const auto& l : layout_) {
    TensorPayload p;
    p.name = l.name;
    auto x = keep ? delta_.narrow(0, l.offset, l.numel)
                  : theta_start_.narrow(0, l.offset, l.numel) - params.narrow(0, l.offset, l.numel);
    p.encoded = encode_tensor(l, x.view(l.shape));
    u.tensors.push_back(std::move(p));
  }
  *codec_s += now_s() - t;
  return u;
}

// The round's result: the new state itself, or the encoded aggregate that the method applies.
PullResult CoordinatedSync::download(torch::Tensor& params, double* codec_s) {
  if (!download_update_) return client_->pull(round_ + 1, layout_, params, pull_timeout());
  std::vector<Encoded> aggregate;
  PullResult down = client_->pull_aggregate(round_ + 1, layout_, aggregate, pull_timeout());
  double t = now_s();
  apply_download(params, aggregate);
  *codec_s += now_s() - t;
  return down;
}

// The round went on without this worker: its push came too late (a straggler), the coordinator
// restarted from a checkpoint, or it dropped this worker. Takes the coordinator's current state
// (rejoining first unless merely late), moves the trainer to that round and claims its next data
// lease (reporting how far it read the last one). This round's own work is discarded; the
// windows it read stay read (docs/data.md).
void CoordinatedSync::recover(Trainer& trainer, const RpcError& first, nlohmann::json& record) {
  auto& params = trainer.params().data();
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
                                   " to this worker, which reads shard " + std::to_string(shard_) +
                                   " (another worker took it)");
        round_ = j.round;
      } else {
        ++round_;  // the round this push was for has closed: the next state exists
      }
      PullResult r = pull_params(params, /*with_velocity=*/velocity().defined());
      round_ = r.round;
      claim_data(trainer.loader());  // its own lease, if the coordinator still holds it for it
      break;
    } catch (const RpcError& e) {
      if (e.code == RpcError::kOther || now_s() > give_up) throw;
      spdlog::warn("worker {}: {}; joining again", client_->worker_id(), e.what());
      rejoin = true;
    }
  }
  discard_round();  // what the method kept belongs to discarded work
  trainer.set_position(round_ * round_steps(config_.sync), std::nullopt);
  start_round(trainer);
  if (elastic_) follow_run(trainer);
  spdlog::info("worker {}: continues at round {} (step {})", client_->worker_id(), round_,
               trainer.step());
  record["round"] = round_;
  record["recovered"] = rejoin ? "rejoined" : "late";
  record["worker"] = client_->worker_id();
  record["param_checksum"] = param_checksum(params);
}

// The next round starts from the current parameters, tokens and an empty loss sum.
void CoordinatedSync::start_round(Trainer& trainer) {
  theta_start_.copy_(trainer.params().data());
  round_tokens_start_ = trainer.tokens();
  loss_sum_ = 0, loss_count_ = 0;
  round_start_s_ = now_s();
  round_start_step_ = trainer.step();
}

bool CoordinatedSync::round_ends(const Trainer& trainer) const {
  if (config_.sync.round_seconds > 0) return now_s() - round_start_s_ >= config_.sync.round_seconds;
  // Elastic: H steps from the round's start (a sync may set the step anywhere); else every H.
  if (elastic_) return trainer.step() - round_start_step_ >= config_.sync.inner_steps;
  return trainer.step() % round_steps(config_.sync) == 0;
}

// One Status call (no model bytes): the live members, the round and the tokens of closed rounds.
bool CoordinatedSync::train_alone(Trainer& trainer, nlohmann::json& record) {
  CoordinatorStatus s;
  try {
    s = client_->status();
  } catch (const std::exception& e) {
    if (!alone_) return false;  // the usual recovery when it was not alone
    // Alone and the coordinator unreachable (restarting): nothing to sync with; train on.
    spdlog::warn("worker {}: {}; training on alone", client_->worker_id(), e.what());
    record["lone"] = true;
    round_start_s_ = now_s();
    round_start_step_ = trainer.step();
    return true;
  }
  const std::string& me = client_->worker_id();
  bool member = false;
  for (const auto& m : s.members) member = member || m.worker_id == me;
  if (!member && s.round == round_ && s.members.empty()) {
    // The coordinator restarted from round round_'s checkpoint (this member's anchor) and forgot
    // it: join again and keep the work since the anchor.
    try {
      JoinInfo j = client_->rejoin();
      member = j.round == round_ && j.shard == shard_;
      if (member)
        spdlog::info("worker {}: joined the restarted coordinator again at round {}", me, round_);
    } catch (const std::exception& e) {
      spdlog::warn("worker {}: joining again failed: {}", me, e.what());
    }
    s.members.resize(1);
  }
  const int64_t local = (trainer.tokens() - round_tokens_start_) * site_ranks_;
  const bool budget = s.tokens + local >= token_budget(config_);
  if (!member || s.round != round_ || s.members.size() > 1 || budget) {
    if (alone_)
      spdlog::info("worker {}: {}; syncing the {} tokens trained alone since round {}", me,
                   budget ? "the run's token budget is reached" : "another member is live", local,
                   round_);
    alone_ = false;
    if (stop_) stop_->can_hand_over = false;
    return false;
  }
  if (!alone_)
    spdlog::info(
        "worker {}: the only live member; training on from round {}'s state, no rounds "
        "until another member joins",
        me, round_);
  alone_ = true;
  if (stop_) stop_->can_hand_over = true;
  record["lone"] = true;
  record["worker"] = me;
  round_start_s_ = now_s();  // the next round end comes a round later
  round_start_step_ = trainer.step();
  return true;
}

void CoordinatedSync::hand_over(Trainer& trainer, nlohmann::json& record) {
  torch::NoGradGuard no_grad;
  const std::string& me = client_->worker_id();
  run_over_ = true;  // training ends after this step, whatever the push's fate
  stop_->requested = false;
  try {
    double codec_s = 0;
    const uint64_t up = client_->push(make_update(trainer, &codec_s));
    spdlog::info("worker {}: stopping while alone; handed over its {} tokens since round {}", me,
                 (trainer.tokens() - round_tokens_start_) * site_ranks_, round_);
    record["handed_over"] = true;
    record["bytes_up"] = up;
    record["worker"] = me;
  } catch (const std::exception& e) {
    spdlog::warn("worker {}: stopping while alone; could not hand over its work: {}", me, e.what());
  }
}

void CoordinatedSync::follow_run(Trainer& trainer) {
  CoordinatorStatus s;
  try {
    s = client_->status();
  } catch (const std::exception& e) {
    spdlog::warn("worker {}: status after round {}: {}", client_->worker_id(), round_, e.what());
    return;  // the next sync tries again
  }
  run_over_ = round_ >= s.total_rounds;
  trainer.set_position(progress_step(s.tokens), std::nullopt);
  round_start_step_ = trainer.step();
}

int64_t CoordinatedSync::progress_step(int64_t tokens) const {
  const int64_t budget = std::max<int64_t>(1, token_budget(config_));
  return int64_t((__int128)tokens * config_.train.max_steps / budget);
}

// Renews the lease. Failures are logged when they start and when they end, not every beat.
void CoordinatedSync::heartbeat_loop() {
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

void CoordinatedSync::stop_heartbeats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (heartbeats_.joinable()) heartbeats_.join();
}

std::unique_ptr<Sync> make_coordinated_sync(const Config& config,
                                            std::shared_ptr<CoordinatorClient> client,
                                            const JoinInfo& join) {
  switch (config.sync.mode) {
    case Mode::kDiloco:
      if (config.sync.overlap == "delayed")
        return make_delayed_diloco_strategy(config, std::move(client), join);
      return make_diloco_strategy(config, std::move(client), join);
    case Mode::kDemo:
      return make_demo_strategy(config, std::move(client), join);
    case Mode::kStreaming:
      return make_streaming_strategy(config, std::move(client), join);
    case Mode::kSingle:
    case Mode::kDdp:
      break;  // no coordinator: the Trainer's own strategies (single, DDP)
  }
  throw ConfigError("sync.mode is '" + std::string(mode_name(config.sync.mode)) +
                    "': not a method that meets through the coordinator (diloco, demo, "
                    "streaming)");
}

}  // namespace loco

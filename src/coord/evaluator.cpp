// The coordinator's evaluation, records and checkpoints (see evaluator.h).
#include "evaluator.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "loco/checkpoint.h"
#include "loco/progress.h"
#include "loco/trainer.h"

namespace fs = std::filesystem;

namespace loco {

void write_coordinator_checkpoint(const Config& config, int64_t round, int64_t tokens,
                                  const torch::Tensor& theta, const torch::Tensor& velocity,
                                  const torch::Tensor& shard_tokens, double wall_s,
                                  const torch::Tensor& energy, const torch::Tensor& consensus,
                                  const std::map<std::string, torch::Tensor>& residuals) {
  Checkpoint c;
  c.step = round;
  c.tokens = tokens;
  c.tensors["params"] = theta;
  c.tensors["outer_velocity"] = velocity;
  c.tensors["shard_tokens"] = shard_tokens;
  if (energy.defined()) c.tensors["energy"] = energy;
  if (consensus.defined()) c.tensors["consensus"] = consensus;
  put_named(c.tensors, "download_residual", residuals);
  c.wall_s = wall_s;
  c.config_yaml = to_yaml(config);
  std::string dir = (fs::path(config.run.dir) / "checkpoints").string();
  save_checkpoint(checkpoint_path(dir, c.step), c);
  prune_checkpoints(dir, config.train.keep_checkpoints);
}

Evaluator::Evaluator(const Config& config) : config_(config) {
  if (config_.sync.coordinator.evaluate) {
    val_tokens_ = load_checked_tokens("data.val", config_.data.val, config_.model);
    token_bytes_ = load_token_bytes(config_);
  }
  model_ = GPT(config_.model);
  model_->init_weights(config_.run.seed);
  if (!config_.train.init_from.empty()) init_from_checkpoint(*model_, config_.train.init_from);
  flat_ = std::make_unique<FlatParams>(*model_, /*with_grad=*/false);
}

namespace {

// Points every parameter of the model at its slice of `flat` (an empty tensor: at nothing).
void point_params_at(const std::vector<FlatParams::Slot>& slots, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  for (const auto& s : slots) {
    torch::Tensor p = s.param;  // the module's parameter itself (shares its TensorImpl)
    p.set_data(flat.numel() ? flat.narrow(0, s.offset, s.numel).view(s.shape)
                            : torch::empty({0}, flat.options()));
  }
}

}  // namespace

torch::Tensor Evaluator::take_initial_params() {
  torch::Tensor initial = flat_->data();
  point_params_at(flat_->slots(), torch::empty({0}, initial.options()));
  flat_->data() = torch::Tensor();
  return initial;
}

void Evaluator::start(std::unique_ptr<MetricsWriter> metrics) {
  metrics_ = std::move(metrics);
  start_time_ = now_s();
  thread_ = std::thread([this] { loop(); });
}

Evaluator::~Evaluator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Evaluator::submit(ClosedRound r) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(r));
  }
  cv_.notify_all();
}

void Evaluator::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

bool Evaluator::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.empty() && !busy_;
}

double Evaluator::last_val_loss() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_val_loss_;
}

std::vector<LossPoint> Evaluator::val_losses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return val_losses_;
}

double Evaluator::last_val_bpb() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_val_bpb_;
}

void Evaluator::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    ClosedRound r = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    try {
      // r.theta, or the replica a demo consensus reports (logs without evaluating when r.theta
      // is undefined)
      torch::Tensor reported = evaluate_and_log(r);
      // A demo round reporting a replica keeps the consensus beside it (the coordinator's
      // state on a restart).
      bool replica = !reported.is_same(r.theta);
      if (r.velocity.defined())
        write_coordinator_checkpoint(config_, r.round, r.tokens_total, reported, r.velocity,
                                     r.shard_tokens, now_s() - start_time_, r.energy_state,
                                     replica ? r.theta : torch::Tensor());
    } catch (const std::exception& e) {
      spdlog::error("coordinator: evaluating round {} failed: {}", r.round, e.what());
    }
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

torch::Tensor Evaluator::evaluate_and_log(const ClosedRound& r) {
  nlohmann::json record = {{"round", r.round},
                           {"step", r.round * round_steps(config_.sync)},
                           {"tokens", r.tokens_total},
                           {"lr", config_.sync.outer.lr},
                           {"wall_s", r.wall_s}};
  if (r.relogged) {  // evaluated again from its checkpoint: what the checkpoint does not keep is
                     // gone
    record.update({{"round_tokens", r.tokens}, {"relogged", true}});
    evaluate_into(r, record);
    metrics_->write(record);
    return r.theta;
  }
  const LedgerTotals& b = r.bytes;
  record.update({{"loss", r.loss},
                 {"workers", r.workers},
                 {"members", r.members},
                 {"bytes_total", b.method},
                 {"setup_bytes_total", b.setup},
                 {"fp32_diloco_bytes", b.fp32_diloco},
                 {"ddp_bytes", b.ddp},
                 {"ratio_vs_diloco_fp32", b.fp32_diloco / double(b.method)},
                 {"ratio_vs_ddp", b.ddp / double(b.method)}});
  if (r.consensus) {
    record["consensus"] = true;
    record["consensus_bytes_total"] = b.consensus;
  } else {
    record.update({{"bytes_up", r.up},
                   {"bytes_down", r.down},
                   {"round_tokens", r.tokens},
                   {"round_s", r.round_s},
                   {"live", r.live},
                   {"deadline_s", r.deadline_s},
                   {"coord_work_s", r.work_s},
                   {"coord_work_bytes", r.work_bytes}});
  }
  if (!r.energy.is_null()) record.update(r.energy);  // a trace schedule's sites so far
  torch::Tensor reported = evaluate_into(r, record);
  metrics_->write(record);
  return reported;
}

EvalStats Evaluator::evaluate_params(const torch::Tensor& theta) {
  // The model reads the round's parameters in place (they are immutable: the coordinator steps a
  // copy of a state anyone still holds) and lets go of them afterwards.
  point_params_at(flat_->slots(), theta);
  const auto& t = config_.train;
  EvalStats e;
  try {
    e = evaluate_model(model_, *val_tokens_, token_bytes_, t.batch_size, config_.model.seq_len,
                       t.eval_batches, torch::Device(torch::kCPU));
  } catch (...) {
    point_params_at(flat_->slots(), torch::empty({0}, theta.options()));
    throw;
  }
  point_params_at(flat_->slots(), torch::empty({0}, theta.options()));
  return e;
}

torch::Tensor Evaluator::evaluate_into(const ClosedRound& r, nlohmann::json& record) {
  // The members' metrics carry the same checksum after they took this state.
  if (r.theta.defined()) record["param_checksum"] = param_checksum(r.theta);
  std::optional<EvalStats> e;
  if (r.theta.defined() && config_.sync.coordinator.evaluate) e = evaluate_params(r.theta);
  torch::Tensor reported = r.theta;
  if (r.consensus) {
    if (e) record.update({{"consensus_val_loss", e->loss}, {"consensus_val_bpb", e->bpb}});
    reported = report_replicas(r, e, record);
  }
  if (!e) return reported;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_val_loss_ = e->loss;
    last_val_bpb_ = e->bpb;
    append_loss_point(val_losses_, {r.round, e->loss});
  }
  spdlog::info("coordinator: round {}{} | val loss {:.4f} | val bpb {:.4f}", r.round,
               r.consensus ? " (" + record.value("reported", std::string()) + ")" : "", e->loss,
               e->bpb);
  record["val_loss"] = e->loss;
  record["val_bpb"] = e->bpb;
  return reported;
}

torch::Tensor Evaluator::report_replicas(const ClosedRound& r, std::optional<EvalStats>& e,
                                         nlohmann::json& record) {
  const ReplicaReport& rep = r.replicas;
  nlohmann::json losses = nlohmann::json::object();
  for (const auto& x : rep.evals) losses[x.member] = x.loss;
  nlohmann::json stats = replica_loss_stats(rep.evals);
  record.update({{"report_model", config_.sync.report_model},
                 {"replica_val_loss", stats},
                 {"replica_val_losses", losses}});
  // The replica kept (the named one, or the best one), unless the consensus beats it for "best"
  // or no replica was kept (report_model consensus, or the named one did not evaluate).
  bool replica = rep.theta.defined() &&
                 !(config_.sync.report_model == "best" && e && e->loss <= rep.kept.loss);
  if (!rep.theta.defined() && config_.sync.report_model != "consensus") {
    const std::string named = report_replica(config_.sync);
    spdlog::warn(
        "coordinator: round {}: no replica to report for sync.report_model {} "
        "(none evaluated{}); reporting the consensus",
        r.round, config_.sync.report_model, named.empty() ? "" : ", or " + named + " did not push");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e) last_consensus_ = *e;
    last_replicas_ = stats;
    last_reported_ = replica ? rep.kept.member : "consensus";
    reported_replica_ = replica ? rep.theta : torch::Tensor();
    reported_round_ = r.round;
  }
  record["reported"] = replica ? rep.kept.member : "consensus";
  if (!replica) return r.theta;
  record["report_checksum"] = param_checksum(rep.theta);
  e = EvalStats{rep.kept.loss, rep.kept.bpb};
  return rep.theta;
}

torch::Tensor Evaluator::reported_replica(int64_t round) const {
  std::lock_guard<std::mutex> lock(mu_);
  return round == reported_round_ ? reported_replica_ : torch::Tensor();
}

nlohmann::json Evaluator::replica_summary() const {
  if (config_.sync.mode != Mode::kDemo) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json out = {{"report_model", config_.sync.report_model},
                        {"reported", last_reported_},
                        {"replicas_final_val_loss", last_replicas_}};
  if (last_consensus_)
    out.update({{"consensus_final_val_loss", last_consensus_->loss},
                {"consensus_final_val_bpb", last_consensus_->bpb}});
  return out;
}

}  // namespace loco

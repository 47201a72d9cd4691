// The coordinator's round state machine (see include/loco/coordinator.h): joins, pushes and
// pulls against the global model, composed of membership, the method's aggregator, the byte
// ledger and the evaluator.
#include "loco/coordinator.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "aggregator.h"
#include "data_plan.h"
#include "evaluator.h"
#include "ledger.h"
#include "loco/energy.h"
#include "loco/files.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "loco/run_dir.h"
#include "membership.h"
#include "own.h"

namespace loco {

CoordinatorCore::CoordinatorCore(const Config& config, bool resume) : config_(config) {
  validate(config_);
  if (config_.train.threads > 0) torch::set_num_threads(int(config_.train.threads));
  const auto& sync = config_.sync;
  total_rounds_ = config_.train.max_steps / round_steps(sync);
  // Elastic rounds end at the token budget (end_at_budget); rounds of seconds have no count of
  // their own, only this cap (every round has at least one inner step of one member).
  if (sync.round_seconds > 0) total_rounds_ = config_.train.max_steps * sync.workers;
  evaluator_ = std::make_unique<Evaluator>(config_);
  for (const auto& s : evaluator_->slots()) layout_.push_back({s.name, s.shape, s.offset, s.numel});
  theta_ = evaluator_->take_initial_params();  // the only copy: pulls and evaluations share it
  outer_ = std::make_unique<OuterNesterov>(sync.outer.lr, sync.outer.momentum, theta_);
  aggregator_ = make_aggregator(config_, layout_);
  members_ = std::make_unique<Membership>(sync.workers, sync.coordinator);
  plan_ = std::make_unique<DataPlan>();
  ledger_ =
      std::make_unique<ByteLedger>(theta_.numel(), sync.workers, round_steps(sync),
                                   sync.mode == Mode::kStreaming ? sync.streaming.fragments : 1);
  if (!sync.schedule.empty()) {
    Schedule schedule = Schedule::load(sync.schedule);
    if (schedule.has_trace()) energy_ = std::make_unique<EnergyMeter>(schedule);
  }

  std::string newest =
      prepare_run_dir(config_.run.dir, resume ? RunStart::kResume : RunStart::kFresh);
  int64_t keep_metrics = -1;
  if (resume) {
    // The data plan is saved on every claim, not with the round: the leases handed out since
    // the checkpoint stay handed out (their windows were read; docs/data.md).
    auto plan_file = std::filesystem::path(config_.run.dir) / "data_plan.json";
    if (std::filesystem::exists(plan_file)) {
      std::ifstream in(plan_file);
      try {
        *plan_ = DataPlan::from_json(
            nlohmann::json::parse(in), now_s(),
            std::max(sync.coordinator.lease_s, sync.coordinator.connect_timeout_s));
      } catch (const std::exception& e) {
        throw std::runtime_error(plan_file.string() + ": " + e.what());
      }
      spdlog::info("coordinator: data plan restored from {}", plan_file.string());
    }
    restore(newest);
    keep_metrics = round_ * round_steps(sync);  // records are keyed by step, not round
  }
  evaluator_->start(open_run_files(config_, keep_metrics));
  if (resume) relog_lost_rounds();
  start_time_ = now_s();
  round_started_ = last_waiting_log_ = start_time_;
  spdlog::info(
      "coordinator: {} parameters in {} tensors, {} rounds of {} inner steps, "
      "outer lr {} momentum {}, codec {}",
      theta_.numel(), layout_.size(), total_rounds_, round_steps(sync), sync.outer.lr,
      sync.outer.momentum, sync.codec.type);
}

CoordinatorCore::~CoordinatorCore() = default;

Member& CoordinatorCore::member_locked(const std::string& worker_id) {
  return members_->touch(worker_id);
}

JoinInfo CoordinatorCore::join(const std::string& name, int64_t num_params, int32_t want_shard) {
  // The name becomes an id and goes into logs and metrics: short, printable, no spaces.
  if (name.size() > kMaxWorkerName ||
      !std::all_of(name.begin(), name.end(), [](char ch) { return ch > 0x20 && ch < 0x7f; }))
    throw CoordError(CoordError::kInvalidArgument,
                     "worker name must be at most " + std::to_string(kMaxWorkerName) +
                         " printable ASCII characters without spaces");
  std::lock_guard<std::mutex> lock(mu_);
  if (num_params != theta_.numel())
    throw CoordError(CoordError::kInvalidArgument, "model has " + std::to_string(num_params) +
                                                       " parameters, the coordinator's has " +
                                                       std::to_string(theta_.numel()) +
                                                       " (model config differs)");
  if (round_ >= total_rounds_)
    throw CoordError(CoordError::kFailedPrecondition, "the run is over (all rounds done)");
  return members_->join(name, want_shard, round_);
}

void CoordinatorCore::heartbeat(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  member_locked(worker_id);
}

void CoordinatorCore::leave(const std::string& worker_id, int64_t lease_id, int64_t consumed) {
  std::lock_guard<std::mutex> lock(mu_);
  // A member that leaves after pushing this round's update (a lone member handing over its work
  // on a stop, docs/multisite.md) closes the round when every member taking part has pushed: its
  // work is in, and the members still to come may never come (a schedule's windows).
  const Member* m = members_->find(worker_id);
  if (m && m->info.reported && round_ < total_rounds_ && members_->all_reported(round_))
    close_round_locked();
  if (!members_->leave(worker_id)) return;
  // After a pause's last round its lease stays its own (read as far as it says), for its exact
  // resume to ask the unread rest back before any claim of the next sitting deals it out.
  const bool keep = paused_ && round_ >= total_rounds_;
  if (plan_->release(worker_id, lease_id, consumed, keep)) save_plan_locked();
  round_closed_.notify_all();
}

DataLease CoordinatorCore::claim_data(const std::string& worker_id, int64_t lease_id,
                                      int64_t consumed, int64_t want, int64_t windows,
                                      const std::vector<LeaseRange>& resume, int64_t round) {
  std::lock_guard<std::mutex> lock(mu_);
  const Member& m = member_locked(worker_id);
  // The run's seats (docs/data.md): the sites in config order (a site joins under its name),
  // else the sync.workers slots; each seat a round of windows for each of its ranks.
  const auto& t = config_.train;
  const int64_t per_rank = round_steps(config_.sync) * t.grad_accum * t.batch_size;
  const auto& sites = config_.sync.sites;
  DataSeats seats;
  seats.round = round >= 0 ? round : round_;
  if (sites.empty()) {
    seats.seat = m.info.shard;
    seats.sizes.assign(size_t(config_.sync.workers), per_rank);
  } else {
    for (size_t i = 0; i < sites.size(); ++i) {
      if (sites[i].name == worker_id) seats.seat = int64_t(i);
      seats.sizes.push_back(per_rank * sites[i].ranks);
    }
  }
  DataLease lease = plan_->claim(worker_id, lease_id, consumed, want, windows, seats, resume);
  save_plan_locked();
  return lease;
}

nlohmann::json CoordinatorCore::data_plan() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plan_->to_json();
}

// run.dir/data_plan.json, atomically (a temporary file, fsynced, renamed).
void CoordinatorCore::save_plan_locked() const {
  const auto path = std::filesystem::path(config_.run.dir) / "data_plan.json";
  write_file_atomically(path.string(), plan_->to_json().dump());
}

void CoordinatorCore::check_header(const Update& u, uint64_t payload_bytes) const {
  uint64_t limit = uint64_t(config_.sync.coordinator.max_update_mb) << 20;
  if (payload_bytes > limit)
    throw CoordError(CoordError::kResourceExhausted,
                     "update of " + std::to_string(payload_bytes) + " bytes exceeds the limit of " +
                         std::to_string(limit) + " (sync.coordinator.max_update_mb)");
  std::lock_guard<std::mutex> lock(mu_);
  // A member's update after the last round: refused when the trace ended the run early or the
  // rounds are elastic (a member that missed the end is told). (Demo's replicas push their
  // state for the last round after it closed.)
  if (u.kind == Update::kDelta && round_ >= total_rounds_ &&
      (trace_over_at_ >= 0 || elastic_rounds(config_.sync)))
    throw CoordError(CoordError::kFailedPrecondition, "the run is over (all rounds done)");
  const Member* m = members_->find(u.worker_id);
  if (!m)
    throw CoordError(CoordError::kNotFound, "unknown worker '" + u.worker_id + "' (join first)");
  if (u.round != round_)
    throw CoordError(CoordError::kFailedPrecondition,
                     "update for round " + std::to_string(u.round) +
                         " but the coordinator is at round " + std::to_string(round_) +
                         (u.round < round_ ? " (stale)" : " (future)"));
  const bool state = u.kind == Update::kState;
  if (state && !aggregator_->replicas())
    throw CoordError(CoordError::kInvalidArgument, "a parameter (STATE) push, but sync.mode is '" +
                                                       std::string(mode_name(config_.sync.mode)) +
                                                       "'; only demo averages replicas");
  if (state ? m->info.reported_state : m->info.reported)
    throw CoordError(CoordError::kFailedPrecondition,
                     "worker '" + u.worker_id + "' already pushed " +
                         (state ? "its parameters for" : "") + "round " + std::to_string(u.round));
  const auto* pieces = state ? nullptr : aggregator_->round_layout(u.round);
  check_tensors(u, pieces ? *pieces : layout_, state ? "none" : aggregator_->push_codec());
  if (u.tokens <= 0 && !state)
    throw CoordError(CoordError::kInvalidArgument,
                     "update claims " + std::to_string(u.tokens) + " tokens (must be positive)");
}

void CoordinatorCore::push(const Update& u, uint64_t wire_bytes) {
  uint64_t payload = 0;
  for (const auto& t : u.tensors) payload += t.encoded.payload.size();
  check_header(u, payload);
  if (u.kind == Update::kState) return push_state(u, wire_bytes);
  // Decode everything before touching the round: a bad tensor changes nothing.
  double work_start = now_s();
  auto decoded = aggregator_->decode(u);
  double decode_s = now_s() - work_start;
  std::unique_lock<std::mutex> lock(mu_);
  auto& m = member_locked(u.worker_id);
  if (u.round != round_ || m.info.reported || m.from_round > round_)  // it may have closed since
    throw CoordError(CoordError::kFailedPrecondition,
                     "round " + std::to_string(u.round) + " closed before this update arrived");
  double add_start = now_s();
  aggregator_->add(u, decoded);
  round_work_s_ += decode_s + (now_s() - add_start);
  members_->reported(m, u.tokens, now_s());
  m.info.last_loss = u.loss;
  m.info.bytes_up += wire_bytes;
  ledger_->up(wire_bytes, Purpose::kRound);
  round_tokens_ += u.tokens;
  round_loss_sum_ += u.loss * double(u.tokens);
  if (members_->round_complete(round_)) close_round_locked();
}

void CoordinatorCore::close_round_locked() {
  ClosedRound r;
  r.round_s = now_s() - round_started_;
  account_energy_locked();
  if (energy_) r.energy = energy_->record();
  double work_start = now_s();
  own(theta_);
  own(outer_->velocity());
  aggregator_->close(theta_, *outer_, round_tokens_);
  r.work_s = round_work_s_ + (now_s() - work_start);
  round_work_s_ = 0;
  r.loss = last_round_loss_ = round_loss_sum_ / double(round_tokens_);
  append_loss_point(train_losses_, {round_ + 1, r.loss});
  r.tokens = round_tokens_;
  r.members = members_->close_round(members_->round_complete(round_));
  r.workers = int(r.members.size());
  r.deadline_s = members_->straggler_deadline();
  r.live = int(members_->size());
  tokens_total_ += r.tokens;
  r.tokens_total = tokens_total_;
  std::tie(r.up, r.down) = ledger_->close_round(r.workers);
  const auto* pieces = aggregator_->round_layout(round_);
  const int64_t numel = pieces
                            ? pieces->back().offset + pieces->back().numel - pieces->front().offset
                            : theta_.numel();
  r.work_bytes = uint64_t(r.workers) * uint64_t(numel) * 4;
  r.bytes = ledger_->totals();
  round_tokens_ = 0, round_loss_sum_ = 0;
  r.round = ++round_;
  end_at_budget();
  if (aggregator_->steps_global_model()) {  // otherwise the consensus is evaluated instead
    if (aggregator_->evaluates(round_, total_rounds_))
      r.theta = theta_;  // shared, never written in place again (own())
    // On disk before any worker can pull this state: what a worker was given is never lost.
    if (checkpoint_due(round_))
      write_coordinator_checkpoint(config_, round_, tokens_total_, theta_, outer_->velocity(),
                                   members_->shard_tokens(), now_s() - start_time_,
                                   energy_state_locked(), {}, download_residuals_locked());
  }
  round_started_ = now_s();
  r.wall_s = round_started_ - start_time_;
  spdlog::info("coordinator: round {}/{} closed with {} of {} live workers, {} tokens, loss {:.4f}",
               r.round, total_rounds_, r.workers, r.live, r.tokens, r.loss);
  evaluator_->submit(std::move(r));
  round_closed_.notify_all();
}

void CoordinatorCore::end_at_budget() {
  if (!elastic_rounds(config_.sync) || round_ >= total_rounds_) return;
  if (tokens_total_ < token_budget(config_)) return;
  spdlog::info("coordinator: {} tokens reach the run's budget of {}: round {} is the last",
               tokens_total_, token_budget(config_), round_);
  end_run_at_locked(round_);
}

void CoordinatorCore::end_run_at_locked(int64_t last) {
  total_rounds_ = last;
  round_closed_.notify_all();
}

void CoordinatorCore::stop_waiting() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  round_closed_.notify_all();
}

void CoordinatorCore::drain() {
  evaluator_->drain();
}

std::pair<int64_t, torch::Tensor> CoordinatorCore::wait_state(const std::string& worker_id,
                                                              int64_t round, double timeout_s,
                                                              double* wait_s) {
  auto d = wait_download(worker_id, PullKind::kParams, round, false, timeout_s, wait_s);
  return {d.round, d.params};
}

Download CoordinatorCore::wait_download(const std::string& worker_id, PullKind kind, int64_t round,
                                        bool with_velocity, double timeout_s, double* wait_s) {
  double start = now_s();
  std::unique_lock<std::mutex> lock(mu_);
  member_locked(worker_id);
  if (kind == PullKind::kAggregate && !aggregator_->serves_aggregate())
    throw CoordError(CoordError::kFailedPrecondition,
                     "this run downloads the parameters, not an aggregate (sync.download)");
  if (kind == PullKind::kConsensus && !aggregator_->replicas())
    throw CoordError(CoordError::kFailedPrecondition, "only sync.mode demo has a consensus");
  // A pull for a round the run will not reach (it ended at its budget or with a trace) or that
  // a stopping coordinator will not close returns at once, not at its timeout: the server's
  // shutdown waits for it.
  auto reached = [&] {
    return kind == PullKind::kConsensus ? consensus_round_ >= round : round_ >= round;
  };
  bool ok = round_closed_.wait_for(lock, std::chrono::duration<double>(timeout_s),
                                   [&] { return reached() || round > total_rounds_ || stopping_; });
  if (wait_s) *wait_s = now_s() - start;
  if (ok && !reached())
    throw CoordError(stopping_ ? CoordError::kUnavailable : CoordError::kFailedPrecondition,
                     stopping_ ? "the coordinator is stopping"
                               : "the run ended at round " + std::to_string(round_) +
                                     ", before round " + std::to_string(round));
  if (!ok)
    throw CoordError(CoordError::kUnavailable, "round " + std::to_string(round) +
                                                   " not reached within " +
                                                   std::to_string(int(timeout_s)) + " s");
  Download d;
  d.round = kind == PullKind::kConsensus ? consensus_round_ : round_;
  d.last_round = total_rounds_;
  if (kind == PullKind::kAggregate) {
    if (round != round_)
      throw CoordError(CoordError::kFailedPrecondition,
                       "the aggregate of round " + std::to_string(round) +
                           " is gone (the coordinator is at round " + std::to_string(round_) +
                           "); pull the parameters instead");
    d.tensors = aggregator_->aggregate();
    d.layout = aggregator_->round_layout(round_ - 1);
    d.checksum = aggregator_->checksum();
  } else {
    d.params = theta_;  // the shared state itself, no copy: the next close steps a copy (own())
    if (with_velocity) d.velocity = outer_->velocity();
  }
  return d;
}

void CoordinatorCore::count_download(const std::string& worker_id, uint64_t wire_bytes,
                                     PullKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& all = members_->members();
  auto it = all.find(worker_id);
  bool first = it != all.end() && !it->second.pulled;
  if (it != all.end()) it->second.info.bytes_down += wire_bytes, it->second.pulled = true;
  if (first)  // a member's first pull: what any method needs to start
    ledger_->down(wire_bytes, Purpose::kSetup);
  else if (kind == PullKind::kConsensus && !is_resync_round(round_))
    ledger_->down(wire_bytes, Purpose::kConsensus);
  else
    ledger_->down(wire_bytes, Purpose::kRound);
}

void CoordinatorCore::tick() {
  std::unique_lock<std::mutex> lock(mu_);
  const double now = now_s();
  account_energy_locked();
  if (energy_ && (trace_over_at_ >= 0 || trace_now_locked() >= energy_->schedule().trace_end_s()))
    end_with_trace_locked(now);
  members_->expire(now);
  if (!members_->empty() || round_ >= total_rounds_) {
    last_waiting_log_ = now;
  } else if (now - last_waiting_log_ >= kWaitingLogS) {  // every member left (sync.schedule)
    spdlog::info("coordinator: no member is up; waiting at round {}/{}", round_, total_rounds_);
    last_waiting_log_ = now;
  }
  std::set<std::string> live;
  for (const auto& [id, m] : members_->members()) live.insert(id);
  if (plan_->sweep(live, now)) save_plan_locked();
  if (round_ < total_rounds_ &&
      (members_->round_complete(round_) || members_->deadline_passed(now)))
    close_round_locked();
  // demo: a member that left or lapsed no longer holds up the consensus
  if (aggregator_->replicas() && consensus_complete_locked()) close_consensus_locked();
}

bool CoordinatorCore::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  // The trace ended the run: members still training are refused; they need not all leave.
  const bool members_done =
      members_->empty() || (trace_over_at_ >= 0 && now_s() - trace_over_at_ > kTraceGraceS);
  return round_ >= total_rounds_ && members_done && evaluator_->idle();
}

int64_t CoordinatorCore::round() const {
  std::lock_guard<std::mutex> lock(mu_);
  return round_;
}

}  // namespace loco

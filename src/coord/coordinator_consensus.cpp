// The consensus rounds of methods whose replicas differ (the decoupled method, docs/dct.md): every
// member pushes its whole replica (a STATE push), the coordinator averages them into the
// consensus, keeps the reported replica beside it and hands both to the evaluator.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <string>

#include "aggregator.h"
#include "evaluator.h"
#include "ledger.h"
#include "loco/coordinator.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "membership.h"
#include "own.h"

namespace loco {

void CoordinatorCore::push_state(const Update& u, uint64_t wire_bytes) {
  ReplicaAverage& replicas = *aggregator_->replicas();
  auto decoded = replicas.decode(u);
  std::unique_lock<std::mutex> lock(mu_);
  auto& m = member_locked(u.worker_id);
  if (u.round != round_ || m.info.reported_state || consensus_round_ == round_)
    throw CoordError(CoordError::kFailedPrecondition,
                     "the consensus of round " + std::to_string(u.round) + " is closed");
  replicas.add(u, decoded);
  m.info.reported_state = true;
  m.info.bytes_up += wire_bytes;
  ledger_->up(wire_bytes, is_resync_round(round_) ? Purpose::kResync : Purpose::kConsensus);
  if (consensus_complete_locked()) close_consensus_locked();
}

bool CoordinatorCore::consensus_complete_locked() const {
  // Every member still here pushed its replica (a member that pushed and left is in the sum).
  if (aggregator_->replicas()->count() == 0) return false;
  for (const auto& [id, m] : members_->members())
    if (!m.info.reported_state) return false;
  return true;
}

bool CoordinatorCore::is_resync_round(int64_t round) const {
  return aggregator_->replicas() && config_.sync.resync_every > 0 &&
         round % config_.sync.resync_every == 0;
}

void CoordinatorCore::close_consensus_locked() {
  ReplicaAverage& replicas = *aggregator_->replicas();
  ClosedRound r;
  r.consensus = true;
  r.round = round_;
  r.workers = replicas.count();
  own(theta_);
  replicas.take(theta_, r.replicas);
  for (auto& [id, m] : members_->members()) m.info.reported_state = false;
  r.tokens_total = tokens_total_;
  r.loss = last_round_loss_;
  r.wall_s = now_s() - start_time_;
  r.bytes = ledger_->totals();
  r.theta = theta_;  // shared, never written in place again (own())
  if (checkpoint_due(round_)) {
    r.velocity = outer_->velocity();
    r.shard_tokens = members_->shard_tokens();
    r.energy_state = energy_state_locked();
  }
  consensus_round_ = round_;
  spdlog::info("coordinator: consensus of round {} from {} replicas", round_, r.workers);
  evaluator_->submit(std::move(r));
  round_closed_.notify_all();
}

}  // namespace loco

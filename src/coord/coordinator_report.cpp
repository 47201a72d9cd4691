// What the coordinator reports of itself: the totals of summary.json (ledger, rounds, data,
// replicas, link, energy) and the numbers of its Status RPC (loco status, the status page).
#include <torch/torch.h>

#include "data_plan.h"
#include "evaluator.h"
#include "ledger.h"
#include "loco/coordinator.h"
#include "loco/energy.h"
#include "loco/link.h"
#include "loco/progress.h"
#include "membership.h"

namespace loco {

nlohmann::json CoordinatorCore::totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json out = ledger_->summary();
  out.update({{"rounds", round_},
              {"total_rounds", total_rounds_},
              // false when stopped early (Ctrl-C, SIGTERM) or paused
              {"complete", round_ >= total_rounds_ && !paused_},
              {"tokens", tokens_total_},
              {"final_val_loss", evaluator_->last_val_loss()},
              {"final_val_bpb", evaluator_->last_val_bpb()},
              {"data", plan_->summary()}});
  nlohmann::json replicas = evaluator_->replica_summary();  // demo: replicas and consensus
  if (!replicas.is_null()) out.update(replicas);
  // The slow link the workers reached this coordinator through, and how it was shaped.
  LinkPlan link = plan_link(config_.sync.link);
  if (!link.record.is_null()) out["link"] = link.record;
  if (energy_) {
    account_energy_locked();  // up to now
    out.update(energy_summary(*energy_, tokens_total_));
    out["ended_by"] = trace_over_at_ >= 0 ? "trace" : "budget";
  }
  return out;
}

CoordinatorStatus CoordinatorCore::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  CoordinatorStatus s;
  s.round = round_, s.total_rounds = total_rounds_;
  const double now = now_s();
  for (const auto& [id, m] : members_->members()) {
    s.members.push_back(m.info);
    s.members.back().seen_s_ago = now - m.last_seen;
  }
  s.bytes_up = ledger_->bytes_up(), s.bytes_down = ledger_->bytes_down();
  s.last_val_loss = evaluator_->last_val_loss();
  s.val_losses = evaluator_->val_losses();
  s.train_losses = train_losses_;
  s.tokens = tokens_total_;
  s.mode = mode_name(config_.sync.mode);
  s.wall_s = now - start_time_;
  return s;
}

}  // namespace loco

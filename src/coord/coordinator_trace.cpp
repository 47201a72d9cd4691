// The coordinator under a carbon-intensity trace schedule (docs/curtailment.md): the trace's
// clock, the sites' energy accounting and the end of the run at the trace's end.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <set>
#include <string>

#include "loco/coordinator.h"
#include "loco/energy.h"
#include "loco/progress.h"
#include "membership.h"

namespace loco {

double CoordinatorCore::trace_now_locked() const {
  return trace_offset_ + energy_->schedule().trace_time(now_s() - start_time_);
}

void CoordinatorCore::account_energy_locked() const {
  if (!energy_) return;
  std::set<std::string> training;
  for (const auto& [id, m] : members_->members()) training.insert(m.info.name);
  energy_->advance(trace_now_locked(), training);
}

void CoordinatorCore::end_with_trace_locked(double now) {
  if (trace_over_at_ < 0) {
    trace_over_at_ = now;
    if (round_ < total_rounds_) {
      // The sites still up are being stopped with the trace. A lone member (sync.lone train)
      // hands over its work since its anchor, trained inside the trace: the open round takes it
      // as the last. Members syncing in rounds drop the round in progress.
      const bool lone = config_.sync.lone == "train" && members_->size() == 1;
      const int64_t last = lone ? round_ + 1 : round_;
      spdlog::info(
          "coordinator: the trace ended ({:.0f} trace s): the run ends {} of {}; pushes for "
          "later rounds are refused",
          energy_->schedule().trace_end_s(),
          last == round_ ? "at round " + std::to_string(round_)
                         : "with round " + std::to_string(last) + " (the lone member's hand-over)",
          total_rounds_);
      end_run_at_locked(last);
    }
  }
  if (round_ >= total_rounds_ || (!members_->empty() && now - trace_over_at_ <= kTraceGraceS))
    return;
  if (round_tokens_ > 0) {  // the members gone or out of time: the round with what came
    close_round_locked();
  } else {
    end_run_at_locked(round_);
  }
}

torch::Tensor CoordinatorCore::energy_state_locked() const {
  if (!energy_) return {};
  auto state = energy_->state();
  return torch::tensor(state, torch::kDouble);
}

}  // namespace loco

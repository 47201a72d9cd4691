// Learning-rate schedules: warm-up, then cosine decay or a linear warm-down.
#include <cmath>

#include "loco/optim.h"

namespace loco {

double lr_multiplier(const ScheduleConfig& s, int64_t step, int64_t max_steps) {
  if (step < s.warmup_steps) return double(step + 1) / double(s.warmup_steps);
  if (s.kind == "cosine") {
    int64_t span = std::max<int64_t>(1, max_steps - s.warmup_steps);
    double progress = std::min(1.0, double(step - s.warmup_steps) / double(span));
    return s.min_lr_frac + (1.0 - s.min_lr_frac) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  // linear: hold the peak, then warm down linearly over the last warmdown_frac of the run.
  double start = std::max(double(s.warmup_steps), double(max_steps) * (1.0 - s.warmdown_frac));
  if (step < start) return 1.0;
  double progress = std::min(1.0, (step - start) / std::max(1.0, max_steps - start));
  return 1.0 - progress * (1.0 - s.min_lr_frac);
}

}  // namespace loco

// Energy and emissions of a run under a carbon-intensity trace schedule (include/loco/schedule.h,
// docs/curtailment.md), in trace time. Per site of the schedule:
//   up_s         trace seconds the schedule has it powered (provisioning or up)
//   train_s      trace seconds it was also a live member of the coordinator (training); a member
//                the schedule has down is not counted (the launcher is stopping it)
//   energy_kwh   train_kw * train_s / 3600 + idle_kw * (up_s - train_s) / 3600
//   emissions_g  the integral of power(t) [kW] * intensity(region, t) over the powered time / 3600,
//                the trace's numbers read as gCO2/kWh
// A centralised baseline is the same training work done by one site without pause from the
// trace's start in one region at the default train_kw (baseline_train_kw): its duration is the
// run's tokens over one site's measured tokens per train-second (tokens / the sites' summed
// train_s, which makes it the summed train_s), and its emissions are train_kw * ∫ intensity over
// [0, duration) / 3600 (the trace repeats past its end). ratio = the run's emissions / the
// baseline's.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loco/schedule.h"

namespace loco {

struct SiteEnergy {
  double up_s = 0, train_s = 0, energy_kwh = 0, emissions_g = 0;
  double window_energy_kwh = 0;  // spent while the region's intensity was below window_below
};

struct Baseline {
  double duration_s = 0, emissions_g = 0, ratio = 0;
};

class EnergyMeter {
 public:
  // `schedule` must have a trace (Schedule::has_trace); the meter keeps a copy.
  explicit EnergyMeter(const Schedule& schedule);

  const Schedule& schedule() const { return schedule_; }
  // Trace seconds accounted so far.
  double now() const { return now_; }
  // Accounts [now(), trace_s) (clamped to the trace's end; nothing when trace_s <= now()) with
  // the sites named in `training` live members throughout.
  void advance(double trace_s, const std::set<std::string>& training);
  const std::map<std::string, SiteEnergy>& sites() const { return sites_; }
  // The sum over the sites.
  SiteEnergy total() const;

  // {"trace_s", "energy_kwh", "emissions_g", "sites": {NAME: {"energy_kwh", "emissions_g",
  // "up_s", "train_s"}}}: what every round's metrics record carries.
  nlohmann::json record() const;
  // For the coordinator's checkpoint: now(), then each site's four numbers in name order.
  std::vector<double> state() const;
  // Throws std::runtime_error when `state` does not match this schedule's sites.
  void restore(const std::vector<double>& state);

 private:
  Schedule schedule_;
  double now_ = 0;
  std::map<std::string, SiteEnergy> sites_;
};

// The centralised baseline of `duration_s` trace seconds at `train_kw` in each region of the
// trace, with ratio = run_emissions_g / its emissions.
std::map<std::string, Baseline> centralised_baselines(const IntensityTrace& trace, double train_kw,
                                                      double duration_s, double run_emissions_g);
// The baselines' train_kw: the schedule's default `power`, or where it gives none, the first
// site's.
double baseline_train_kw(const Schedule& schedule);
// The baseline's duration: `tokens` at the rate tokens / train_s_total (0 when nothing trained).
double baseline_duration_s(int64_t tokens, double train_s_total);
// {REGION: {"emissions_g", "ratio", "duration_s"}}.
nlohmann::json baselines_json(const std::map<std::string, Baseline>& baselines);
// summary.json's fields for a run that trained `tokens`: "sites", "baselines", "energy_kwh",
// "emissions_g", "trace_s", "trace_end_s".
nlohmann::json energy_summary(const EnergyMeter& meter, int64_t tokens);

}  // namespace loco

// Energy and emissions in trace time (see include/loco/energy.h): the per-site integration, the
// centralised baselines and their JSON.
#include "loco/energy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace loco {

EnergyMeter::EnergyMeter(const Schedule& schedule) : schedule_(schedule) {
  for (const auto& [name, site] : schedule_.trace_sites()) sites_[name] = {};
}

void EnergyMeter::advance(double trace_s, const std::set<std::string>& training) {
  const double b = std::min(trace_s, schedule_.trace_end_s()), a = now_;
  if (!(b > a)) return;
  const IntensityTrace& trace = schedule_.trace();
  for (auto& [name, e] : sites_) {
    const TraceSite& site = schedule_.trace_site(name);
    const bool live = training.count(name) > 0;
    const double kw_on = live ? site.power.train_kw : site.power.idle_kw;
    // Pieces of [a, b) within one powered interval and one trace row: constant power and
    // intensity.
    for (const auto& [on, off] : site.powered) {
      double x = std::max(a, on), end = std::min(b, off);
      while (x < end) {
        size_t row = trace.row_at(x);
        double row_end =
            row + 1 < trace.times().size() ? trace.times()[row + 1] : trace.duration_s();
        double y = std::min(end, row_end), dt = y - x;
        if (dt <= 0) break;  // cannot happen for a < b inside the trace; guards the loop
        e.up_s += dt;
        if (live) e.train_s += dt;
        e.energy_kwh += kw_on * dt / 3600;
        e.emissions_g += kw_on * dt / 3600 * trace.value(site.region, row);
        if (trace.value(site.region, row) < site.window_below)
          e.window_energy_kwh += kw_on * dt / 3600;
        x = y;
      }
    }
  }
  now_ = b;
}

SiteEnergy EnergyMeter::total() const {
  SiteEnergy t;
  for (const auto& [name, e] : sites_) {
    t.up_s += e.up_s, t.train_s += e.train_s;
    t.energy_kwh += e.energy_kwh, t.emissions_g += e.emissions_g;
    t.window_energy_kwh += e.window_energy_kwh;
  }
  return t;
}

namespace {

nlohmann::json site_json(const SiteEnergy& e) {
  return {{"energy_kwh", e.energy_kwh},
          {"emissions_g", e.emissions_g},
          {"window_energy_kwh", e.window_energy_kwh},
          {"up_s", e.up_s},
          {"train_s", e.train_s}};
}

}  // namespace

nlohmann::json EnergyMeter::record() const {
  nlohmann::json sites = nlohmann::json::object();
  for (const auto& [name, e] : sites_) sites[name] = site_json(e);
  SiteEnergy t = total();
  return {{"trace_s", now_},
          {"energy_kwh", t.energy_kwh},
          {"emissions_g", t.emissions_g},
          {"sites", sites}};
}

std::vector<double> EnergyMeter::state() const {
  std::vector<double> out = {now_};
  for (const auto& [name, e] : sites_)
    out.insert(out.end(), {e.up_s, e.train_s, e.energy_kwh, e.emissions_g, e.window_energy_kwh});
  return out;
}

void EnergyMeter::restore(const std::vector<double>& state) {
  // five numbers a site; four in checkpoints written before window_energy_kwh
  const size_t per = sites_.empty() || state.size() == 1 + 5 * sites_.size() ? 5 : 4;
  if (state.size() != 1 + per * sites_.size())
    throw std::runtime_error("the checkpoint's energy accounts for " +
                             std::to_string((std::max<size_t>(state.size(), 1) - 1) / per) +
                             " sites, the schedule has " + std::to_string(sites_.size()));
  now_ = state[0];
  size_t i = 1;
  for (auto& [name, e] : sites_) {
    e = {state[i], state[i + 1], state[i + 2], state[i + 3], per == 5 ? state[i + 4] : 0.0};
    i += per;
  }
}

std::map<std::string, Baseline> centralised_baselines(const IntensityTrace& trace, double train_kw,
                                                      double duration_s, double run_emissions_g) {
  std::map<std::string, Baseline> out;
  for (const auto& region : trace.regions()) {
    Baseline b;
    b.duration_s = duration_s;
    b.emissions_g = train_kw * trace.integral(region, 0, duration_s) / 3600;
    b.ratio = b.emissions_g > 0 ? run_emissions_g / b.emissions_g
                                : std::numeric_limits<double>::quiet_NaN();
    out[region] = b;
  }
  return out;
}

double baseline_duration_s(int64_t tokens, double train_s_total) {
  if (tokens <= 0 || !(train_s_total > 0)) return 0;
  const double tokens_per_train_s = double(tokens) / train_s_total;  // one site's measured rate
  return double(tokens) / tokens_per_train_s;
}

nlohmann::json baselines_json(const std::map<std::string, Baseline>& baselines) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [region, b] : baselines) {
    out[region] = {{"emissions_g", b.emissions_g}, {"duration_s", b.duration_s}};
    out[region]["ratio"] = std::isfinite(b.ratio) ? nlohmann::json(b.ratio) : nlohmann::json();
  }
  return out;
}

double baseline_train_kw(const Schedule& schedule) {
  double kw = schedule.power().train_kw;
  if (std::isnan(kw) && !schedule.trace_sites().empty())
    kw = schedule.trace_sites().begin()->second.power.train_kw;
  return kw;
}

nlohmann::json energy_summary(const EnergyMeter& meter, int64_t tokens) {
  nlohmann::json out = meter.record();
  SiteEnergy t = meter.total();
  const Schedule& s = meter.schedule();
  out["trace_end_s"] = s.trace_end_s();
  out["baselines"] = baselines_json(centralised_baselines(
      s.trace(), baseline_train_kw(s), baseline_duration_s(tokens, t.train_s), t.emissions_g));
  return out;
}

}  // namespace loco

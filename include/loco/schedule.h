// When the workers of a DiLoCo run are up: an availability schedule (sync.schedule) that
// `loco launch` replays by stopping and starting workers (docs/faults.md).
//
// The file is YAML with one entry per worker name (`loco launch` names them w0, w1, ...); a
// worker not listed is always up. Each entry gives half-open [start, end) windows in rounds of
// the coordinator or in seconds since the launch, or a CSV trace (a row per period, up while the
// row's last number is above a threshold, e.g. hours of surplus renewable power):
//
//   w1: {rounds: [[0, 4], [8, 100]]}
//   w2: {seconds: [[0, 60], [120, 1e9]]}
//   w3: {trace: solar.csv, seconds_per_row: 10, threshold: 0.5}
//
// Or a carbon-intensity trace (include/loco/trace.h) with a region and a threshold per site
// (docs/curtailment.md):
//
//   trace: intensity.csv        # first column a timestamp (ISO 8601), then one column per region
//   speed: 120                  # trace seconds replayed per wall-clock second (default 1)
//   power: {train_kw: 2.024, idle_kw: 0.468}   # the default for every site; a site may override
//   sites:                      # names as in sync.sites (or w0, w1, ... for single workers)
//     a: {region: CAISO_NORTH, below: 100, hysteresis_s: 600, provision_s: 300}
//     b: {region: SPP_TX, below: 100}
//     c: {region: SPP_TX}         # no `below`: up through the whole trace (accounted all the same)
//
// Trace time = elapsed wall-clock seconds x speed, in seconds since the trace's first row. A
// site is powered from the moment its region's intensity (the last row at or before the time)
// drops below `below`, and stays powered until the intensity has stayed >= below for
// hysteresis_s (default 0) without a break; after each power-up it spends provision_s (default
// 0) provisioning (powered, not training) before it is up. Everything is down past the trace's
// end. A site that is never up over the whole trace is an error, as is any bad trace cell.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loco/trace.h"

namespace YAML {
class Node;
}

namespace loco {

struct Availability {
  std::vector<std::pair<double, double>> rounds, seconds;  // [start, end) windows
};

// kW drawn by a site while training and while powered but idle (provisioning, or up and not a
// live member).
struct PowerModel {
  double train_kw = 0, idle_kw = 0;
};

enum class SiteState { kDown, kProvisioning, kUp };
const char* state_name(SiteState s);  // "down", "provisioning", "up"

// A site of a trace schedule.
struct TraceSite {
  std::string region;
  double below = 0;  // +inf: no threshold given (always powered)
  double hysteresis_s = 0, provision_s = 0;
  // The intensity below which the region is in a curtailment window, for the share of energy
  // spent inside windows (window_below; default `below`; -inf, never, without either).
  double window_below = 0;
  PowerModel power;
  // When it is powered, in trace seconds: sorted, disjoint [on, off) intervals; the first
  // provision_s of each is provisioning, the rest up.
  std::vector<std::pair<double, double>> powered;
};

class Schedule {
 public:
  Schedule() = default;
  // Reads and checks a schedule; throws ConfigError naming the file and the field.
  static Schedule load(const std::string& path);
  // Parses YAML text; `where` names it in errors, `dir` resolves relative trace paths.
  static Schedule parse(const std::string& text, const std::string& where,
                        const std::string& dir = ".");

  bool empty() const { return sites_.empty() && trace_sites_.empty(); }
  bool lists(const std::string& site) const {
    return sites_.count(site) > 0 || trace_sites_.count(site) > 0;
  }
  std::vector<std::string> sites() const;
  // Whether `site` should be up at the coordinator's round `round`, `elapsed_s` after the launch.
  // A site with both kinds of window is up when both say so.
  // A site of a trace schedule: up (not provisioning) at trace time elapsed_s x speed.
  bool up(const std::string& site, int64_t round, double elapsed_s) const;

  // --- Trace schedules (all but has_trace() assume has_trace()) ---
  bool has_trace() const { return !trace_sites_.empty(); }
  const IntensityTrace& trace() const { return trace_; }
  double speed() const { return speed_; }
  // Trace seconds `elapsed_s` wall-clock seconds after the start.
  double trace_time(double elapsed_s) const { return elapsed_s * speed_; }
  // Trace seconds from the first row to the trace's end (trace().duration_s()).
  double trace_end_s() const { return trace_.duration_s(); }
  // The default power model (`power`); each site's own is trace_site(name).power.
  const PowerModel& power() const { return power_; }
  // The sites the trace governs (and the energy accounting covers), by name.
  const std::map<std::string, TraceSite>& trace_sites() const { return trace_sites_; }
  const TraceSite& trace_site(const std::string& site) const { return trace_sites_.at(site); }
  // A trace site's state at trace time t (kDown past the trace's end and for unknown sites).
  SiteState state(const std::string& site, double trace_s) const;
  // The region's intensity at trace time t (trace().intensity).
  double intensity(const std::string& region, double trace_s) const {
    return trace_.intensity(region, trace_s);
  }

 private:
  static Schedule parse_trace(const YAML::Node& root, const std::string& where,
                              const std::string& dir);

  std::map<std::string, Availability> sites_;
  IntensityTrace trace_;
  double speed_ = 1;
  PowerModel power_;
  std::map<std::string, TraceSite> trace_sites_;
};

}  // namespace loco

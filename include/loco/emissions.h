// `loco emissions RUN_DIR`: the energy and emissions of a run under a carbon-intensity trace
// schedule (docs/curtailment.md) from its coordinator's summary.json (or, for a run stopped
// before it, the last metrics.jsonl record that carries them, with the baselines recomputed from
// the run's schedule): a per-site table, the centralised baselines, and a plot of each site's
// availability, the intensity curves with each site's threshold, and the global val loss, all
// against trace time (curtailment.{png,svg}, drawn by gnuplot as `loco compare` draws).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace loco {

struct EmissionsOptions {
  std::string run;  // a run directory (RUN or RUN/coordinator)
  std::string out_dir = "emissions";
  std::string gnuplot = "gnuplot";  // the gnuplot binary (Debian: gnuplot-nox)
  bool plot = true;
};

struct EmissionsResult {
  std::string table;               // markdown: the sites, then the baselines
  std::vector<std::string> files;  // every file written
};

// The markdown tables for summary.json's energy fields (include/loco/energy.h's energy_summary).
std::string emissions_table(const nlohmann::json& summary);

// Reads the run, writes table.md and (options.plot) curtailment.gp, curtailment.png and
// curtailment.svg into out_dir. Throws CompareError: not a run, no trace schedule, gnuplot
// missing or failed (after table.md and curtailment.gp are written).
EmissionsResult emissions_report(const EmissionsOptions& options);

}  // namespace loco

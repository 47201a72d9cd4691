// `loco emissions RUN_DIR` (include/loco/emissions.h): a trace run's per-site energy and
// emissions, its centralised baselines, and the availability / intensity / val loss plot.
#include "loco/emissions.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "loco/compare.h"
#include "loco/config.h"
#include "loco/energy.h"
#include "loco/schedule.h"
#include "plot.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace loco {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string num(const json& j, const char* key, const char* f) {
  return j.contains(key) && j[key].is_number() ? fmt(f, j[key].get<double>()) : "—";
}

// The schedule named in the run's config: as given, else relative to the run directory or one of
// its ancestors (the directory the run was launched from).
fs::path locate(const std::string& file, const fs::path& run_dir) {
  const fs::path p(file);
  if (fs::exists(p) || p.is_absolute()) return p;
  for (fs::path d = fs::absolute(run_dir).lexically_normal();; d = d.parent_path()) {
    if (fs::exists(d / p)) return d / p;
    if (d == d.parent_path()) return p;
  }
}

std::vector<json> read_records(const fs::path& metrics) {
  std::vector<json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto r = json::parse(line, nullptr, false);
    if (!r.is_discarded() && r.is_object()) out.push_back(std::move(r));
  }
  return out;
}

// The plot's data blocks and multiplot: intensity with thresholds, availability, val loss.
std::string plot_script(const Schedule& s, const std::vector<json>& records) {
  const IntensityTrace& tr = s.trace();
  const double h = 3600, end = s.trace_end_s();
  std::ostringstream g;
  g.precision(10);
  g << "# Written by `loco emissions`; run `gnuplot curtailment.gp` in this directory to redraw.\n"
    << "set encoding utf8\n$intensity << EOD\n# trace_h";
  for (const auto& r : tr.regions()) g << ' ' << r;
  g << "\n";
  for (size_t i = 0; i <= tr.times().size(); ++i) {  // one more row: the last step's end
    size_t row = std::min(i, tr.times().size() - 1);
    g << (i < tr.times().size() ? tr.times()[i] : end) / h;
    for (const auto& r : tr.regions()) g << ' ' << tr.value(r, row);
    g << "\n";
  }
  // Availability: each site's level (0 down, 0.5 provisioning, 1 up) at every change.
  std::set<double> changes = {0, end};
  for (const auto& [name, site] : s.trace_sites())
    for (const auto& [on, off] : site.powered)
      changes.insert({on, std::min(on + site.provision_s, off), off});
  g << "EOD\n$availability << EOD\n# trace_h, then per site: its row + 0 / 0.5 / 1\n";
  for (double t : changes) {
    g << t / h;
    int k = 0;
    for (const auto& [name, site] : s.trace_sites()) {
      SiteState st = s.state(name, std::min(t, std::nextafter(end, 0.0)));
      g << ' ' << 1.5 * k++ + (st == SiteState::kUp ? 1 : st == SiteState::kProvisioning ? 0.5 : 0);
    }
    g << "\n";
  }
  g << "EOD\n$loss << EOD\n# trace_h val_loss\n";
  size_t losses = 0;
  for (const auto& r : records)
    if (r.contains("val_loss") && r.contains("trace_s") && r["trace_s"].is_number())
      g << r["trace_s"].get<double>() / h << ' ' << r["val_loss"].get<double>() << "\n", ++losses;
  g << "EOD\n";
  const int panels = losses ? 3 : 2;
  std::ostringstream plots;
  plots << "set multiplot layout " << panels << ",1\nset grid lc rgb '#dddddd'\n"
        << "set key outside right top vertical Left reverse\nset xrange [0:" << end / h << "]\n"
        << "set lmargin 12\nset rmargin 28\n";
  plots << "set title 'carbon intensity and each site''s threshold'\n"
        << "set ylabel 'gCO2/kWh'\nset xlabel ''\nplot";
  int col = 2;
  for (const auto& r : tr.regions())
    plots << (col > 2 ? ", \\\n  " : " ") << "$intensity using 1:" << col << " with steps lw 2 lt "
          << col - 1 << " title '" << r << "'",
        ++col;
  for (const auto& [name, site] : s.trace_sites())
    if (std::isfinite(site.below)) {
      int lt = 1;
      for (const auto& r : tr.regions()) {
        if (r == site.region) break;
        ++lt;
      }
      plots << ", \\\n  " << site.below << " with lines dt 2 lt " << lt << " title '" << name
            << ": below " << site.below << "'";
    }
  plots << "\nset title 'availability (low: down, middle: provisioning, high: up)'\n"
        << "set ylabel ''\nset ytics (";
  int k = 0;
  for (const auto& [name, site] : s.trace_sites())
    plots << (k ? ", " : "") << "'" << name << " (" << site.region << ")' " << 1.5 * k + 0.5, ++k;
  plots << ")\nset yrange [-0.25:" << 1.5 * k << "]\nplot";
  k = 0;
  for (const auto& [name, site] : s.trace_sites())
    plots << (k ? ", \\\n  " : " ") << "$availability using 1:" << k + 2
          << " with steps lw 2 title '" << name << "'",
        ++k;
  plots << "\nset ytics auto\nset yrange [*:*]\n";
  if (losses)
    plots << "set title 'global val loss'\nset ylabel 'val loss'\nset xlabel 'trace time (h)'\n"
          << "plot $loss using 1:2 with linespoints lw 2 pt 7 ps 0.6 title 'coordinator'\n";
  plots << "unset multiplot\n";
  for (const char* term : {"png", "svg"}) {
    g << (std::string(term) == "png"
              ? "set terminal pngcairo size 1100,900 noenhanced font 'sans,11'\n"
              : "set terminal svg size 1100,900 dynamic noenhanced font 'sans,11' background "
                "'white'\n")
      << "set output 'curtailment." << term << "'\n"
      << plots.str() << "unset output\n";
  }
  return g.str();
}

}  // namespace

std::string emissions_table(const json& summary) {
  std::ostringstream s;
  s << "| site | energy (kWh) | emissions (gCO2) | up (trace h) | training (trace h) |\n"
    << "|---|---:|---:|---:|---:|\n";
  for (const auto& [name, e] : summary.at("sites").items()) {
    double up = e.value("up_s", 0.0), train = e.value("train_s", 0.0);
    s << "| " << name << " | " << num(e, "energy_kwh", "%.4f") << " | "
      << num(e, "emissions_g", "%.2f") << " | " << fmt("%.2f", up / 3600) << " | "
      << fmt("%.2f", train / 3600) << " |\n";
  }
  s << "| total | " << num(summary, "energy_kwh", "%.4f") << " | "
    << num(summary, "emissions_g", "%.2f") << " | | |\n";
  if (summary.contains("baselines")) {
    s << "\n| centralised in | emissions (gCO2) | duration (trace h) | run / baseline |\n"
      << "|---|---:|---:|---:|\n";
    for (const auto& [region, b] : summary["baselines"].items())
      s << "| " << region << " | " << num(b, "emissions_g", "%.2f") << " | "
        << fmt("%.2f", b.value("duration_s", 0.0) / 3600) << " | "
        << (b.contains("ratio") && b["ratio"].is_number()
                ? fmt("%.1f%%", 100 * b["ratio"].get<double>())
                : "—")
        << " |\n";
  }
  s << "\nTrace time accounted: " << fmt("%.2f", summary.value("trace_s", 0.0) / 3600) << " h of "
    << fmt("%.2f", summary.value("trace_end_s", 0.0) / 3600) << " h";
  if (summary.contains("ended_by"))
    s << "; the run ended at the " << (summary["ended_by"] == "trace" ? "trace's end" : "budget");
  s << ". Intensity read as gCO2/kWh; baselines: the run's training time (summed train_s) at "
       "one site without pause from the trace's start (docs/curtailment.md).\n";
  return s.str();
}

EmissionsResult emissions_report(const EmissionsOptions& options) {
  fs::path coord(options.run);
  if (fs::exists(coord / "coordinator" / "metrics.jsonl")) coord /= "coordinator";
  if (!fs::exists(coord / "config.yaml") || !fs::exists(coord / "metrics.jsonl"))
    throw CompareError(options.run +
                       ": not a coordinator's run (no config.yaml and metrics.jsonl here or in "
                       "coordinator/)");
  Config config = load_config((coord / "config.yaml").string());
  if (config.sync.schedule.empty())
    throw CompareError(options.run + ": the run has no sync.schedule (no trace, no emissions)");
  Schedule schedule = Schedule::load(locate(config.sync.schedule, coord).string());
  if (!schedule.has_trace())
    throw CompareError(options.run + ": its sync.schedule " + config.sync.schedule +
                       " has no carbon-intensity trace");
  std::vector<json> records = read_records(coord / "metrics.jsonl");
  json summary;
  {
    std::ifstream in(coord / "summary.json");
    if (in) summary = json::parse(in, nullptr, false);
  }
  if (!summary.is_object() || !summary.contains("sites")) {  // stopped before its summary
    summary = json();
    for (auto it = records.rbegin(); it != records.rend() && summary.is_null(); ++it)
      if (it->contains("sites")) summary = *it;
    if (summary.is_null())
      throw CompareError(options.run + ": no energy record yet (no round closed)");
    double train = 0;
    for (const auto& [name, e] : summary["sites"].items()) train += e.value("train_s", 0.0);
    summary["trace_end_s"] = schedule.trace_end_s();
    summary["baselines"] = baselines_json(
        centralised_baselines(schedule.trace(), baseline_train_kw(schedule),
                              baseline_duration_s(summary.value("tokens", int64_t(0)), train),
                              summary.value("emissions_g", 0.0)));
  }
  EmissionsResult result;
  result.table = emissions_table(summary);
  const fs::path out(options.out_dir);
  fs::create_directories(out);
  std::ofstream(out / "table.md") << result.table;
  result.files.push_back((out / "table.md").string());
  if (!options.plot) return result;
  std::ofstream(out / "curtailment.gp") << plot_script(schedule, records);
  result.files.push_back((out / "curtailment.gp").string());
  gnuplot::run(options.gnuplot, out, "curtailment.gp");
  for (const char* ext : {".png", ".svg"}) {
    fs::path file = out / (std::string("curtailment") + ext);
    if (!fs::exists(file) || fs::file_size(file) == 0)
      throw CompareError("gnuplot wrote no " + file.string());
    result.files.push_back(file.string());
  }
  return result;
}

}  // namespace loco

// `loco compare`: whether runs compare (the same tokenizer and val set), the markdown table, and
// compare_runs tying reading (read_run.cpp), the table and the plots (plot.h) together (see
// include/loco/compare.h and docs/compare.md).
#include "loco/compare.h"

#include <algorithm>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "loco/shard.h"
#include "plot.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

// A loss within half the table's last digit of the baseline's final counts as reaching it, so that
// a run printed with the same final loss (DDP vs one process: ~1e-7 apart) is not "not reached".
constexpr double kReachTolerance = 5e-5;

std::string format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// Where a data file named in a run's config is: as given (relative to the current directory),
// else relative to the run directory or one of its ancestors (the directory it was launched from).
std::optional<fs::path> locate(const std::string& file, const fs::path& run_dir) {
  const fs::path p(file);
  if (fs::exists(p)) return p;
  if (p.is_absolute()) return std::nullopt;
  for (fs::path d = fs::absolute(run_dir).lexically_normal();; d = d.parent_path()) {
    if (fs::exists(d / p)) return d / p;
    if (d == d.parent_path()) return std::nullopt;
  }
}

struct FileId {
  std::string named;  // the path in the config
  std::optional<fs::path> found;
  uint64_t hash = 0;
  uintmax_t size = 0;
};

FileId identify(const std::string& named, const fs::path& run_dir) {
  FileId id;
  id.named = named;
  id.found = locate(named, run_dir);
  if (!id.found) return id;
  std::ifstream in(*id.found, std::ios::binary);
  std::vector<char> buf(1 << 20);
  id.hash = fnv1a64(nullptr, 0);
  while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
    id.hash = fnv1a64(buf.data(), size_t(in.gcount()), id.hash);
    id.size += uintmax_t(in.gcount());
  }
  return id;
}

std::string describe(const FileId& id) {
  if (!id.found) return id.named + " (missing)";
  char hash[32];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(id.hash));
  return id.found->string() + " (" + std::to_string(id.size) + " bytes, fnv1a64 " + hash + ")";
}

std::string human_bytes(double b) {
  if (!(b > 0)) return "0 B";
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (b >= 1000 && u < 5) b /= 1000, ++u;
  return u == 0 ? format("%.0f B", b) : format("%.1f ", b) + units[u];
}

std::string human_time(double s) {
  if (s < 120) return format("%.1f s", s);
  if (s < 7200) return format("%.1f min", s / 60);
  return format("%.2f h", s / 3600);
}

std::string with_commas(double v) {
  std::string digits = format("%.0f", v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

std::string ratio(double r) {
  return std::isfinite(r) && r > 0 ? format("%.1f×", r) : "—";
}

}  // namespace

void check_comparable(const std::vector<RunData>& runs) {
  if (runs.size() < 2) return;
  struct Key {
    const char* name;
    const char* what;
    std::string DataConfig::*field;
  };
  const Key keys[] = {{"data.tokenizer", "tokenizers", &DataConfig::tokenizer},
                      {"data.val", "val sets", &DataConfig::val}};
  for (const auto& key : keys) {
    const RunData& a = runs[0];
    FileId first = identify(a.config.data.*key.field, a.dir);
    if (!first.found)
      spdlog::warn("{}: {} {} is missing; comparing runs by its path only", a.dir, key.name,
                   first.named);
    for (size_t i = 1; i < runs.size(); ++i) {
      const RunData& b = runs[i];
      FileId other = identify(b.config.data.*key.field, b.dir);
      bool same = first.found && other.found
                      ? first.hash == other.hash && first.size == other.size
                      : !first.found && !other.found && first.named == other.named;
      if (!same)
        throw CompareError("refusing to put " + a.dir + " and " + b.dir +
                           " on one plot: they use " + "different " + key.what + " (" + key.name +
                           ": " + describe(first) + " vs " + describe(other) +
                           "), so their val losses do not measure the same thing");
    }
  }
}

// A line on the restarts (and give-ups) `loco launch` recorded for each run; "" when no run has
// an events file.
std::string launch_faults_line(const std::vector<RunData>& runs) {
  bool any =
      std::any_of(runs.begin(), runs.end(), [](const RunData& r) { return r.restarts >= 0; });
  if (!any) return "";
  std::ostringstream s;
  s << "\nRestarts after failures (loco launch, launch_events.jsonl): ";
  for (size_t i = 0; i < runs.size(); ++i) {
    s << (i ? ", " : "") << runs[i].dir << ": ";
    if (runs[i].restarts < 0) {
      s << "n/a";
      continue;
    }
    s << runs[i].restarts;
    if (runs[i].given_up > 0) s << " (" << runs[i].given_up << " given up)";
  }
  s << ".\n";
  return s.str();
}

namespace {

// The decoupled method's runs: the model each reports against its consensus and replicas.
std::string replicas_table(const std::vector<RunData>& runs) {
  auto loss = [](double v) { return std::isfinite(v) ? format("%.4f", v) : std::string("—"); };
  std::ostringstream s;
  for (const auto& run : runs) {
    if (run.reported.empty()) continue;
    if (s.tellp() == 0)
      s << "\n| run | reports (sync.report_model) | its val loss | consensus | replicas mean | "
           "replicas min | replicas max |\n|---|---|---:|---:|---:|---:|---:|\n";
    s << "| " << run.dir << " | " << run.reported << " | " << loss(run.final_eval().val_loss)
      << " | " << loss(run.consensus_val_loss) << " | " << loss(run.replicas_mean) << " | "
      << loss(run.replicas_min) << " | " << loss(run.replicas_max) << " |\n";
  }
  if (s.tellp() == 0) return "";
  s << "\nThe decoupled method's replicas differ: the final val loss above is the model the run "
       "reports (docs/dct.md, sync.report_model), beside the average of the replicas (the "
       "consensus) and the replicas' own evaluations at the last consensus round.\n";
  return s.str();
}

}  // namespace

std::string compare_table(const std::vector<RunData>& runs) {
  if (runs.empty()) return "";
  const RunData& base = runs[0];
  const double target = base.final_eval().val_loss;
  std::ostringstream s;
  s << "| run | curve | final val loss | val bpb | tokens | bytes up / worker | "
       "bytes down / worker | reduction vs DDP | reduction vs fp32 DiLoCo | wall time | "
       "time to baseline's final loss |\n"
    << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& run : runs) {
    std::string reach = "not reached";
    for (const auto& p : run.curve)
      if (p.val_loss <= target + kReachTolerance) {
        reach = human_time(p.wall_s);
        break;
      }
    const auto& e = run.final_eval();
    s << "| " << run.dir << " | " << run.label << " | " << format("%.4f", e.val_loss) << " | "
      << (std::isfinite(e.val_bpb) ? format("%.4f", e.val_bpb) : "—") << " | "
      << with_commas(run.tokens) << " | " << human_bytes(run.bytes_up_per_worker) << " | "
      << human_bytes(run.bytes_down_per_worker) << " | " << ratio(run.ratio_vs_ddp) << " | "
      << ratio(run.ratio_vs_fp32_diloco) << " | " << human_time(run.wall_s) << " | " << reach
      << " |\n";
  }
  s << "\nBaseline: the first run given, " << base.dir << " (final val loss "
    << format("%.4f", target)
    << "). Bytes are the method's own traffic, up and down, as counted by the run "
       "(docs/compare.md); a reduction is what DDP or fp32 DiLoCo would have sent for the same "
       "steps over what the run sent (";
  for (size_t i = 0; i < runs.size(); ++i)
    s << (i ? ", " : "") << runs[i].dir << ": "
      << (std::isfinite(runs[i].ratio_vs_ddp) ? runs[i].ratio_source : "n/a");
  s << ").\n";
  s << launch_faults_line(runs);
  s << replicas_table(runs);
  if (std::any_of(runs.begin(), runs.end(),
                  [](const RunData& r) { return std::isfinite(r.emissions_g); })) {
    s << "\n| run | energy (kWh) | emissions (gCO2) |\n|---|---:|---:|\n";
    for (const auto& run : runs)
      s << "| " << run.dir << " | "
        << (std::isfinite(run.energy_kwh) ? format("%.4f", run.energy_kwh) : "—") << " | "
        << (std::isfinite(run.emissions_g) ? format("%.2f", run.emissions_g) : "—") << " |\n";
    s << "\nEnergy and emissions in trace time, summed over the sites of a carbon-intensity "
         "trace schedule (docs/curtailment.md; `loco emissions RUN` for the sites and "
         "baselines).\n";
  }
  return s.str();
}

CompareResult compare_runs(const CompareOptions& options) {
  if (options.runs.empty()) throw CompareError("no run directories given");
  std::vector<RunData> runs;
  for (const auto& dir : options.runs) runs.push_back(read_run(dir));
  check_comparable(runs);
  std::map<std::string, int> seen;  // the same label twice: tell the curves apart by directory
  for (const auto& r : runs) ++seen[r.label];
  for (auto& r : runs)
    if (seen[r.label] > 1) r.label += " [" + r.dir + "]";

  CompareResult result;
  const fs::path out(options.out_dir);
  fs::create_directories(out);
  result.table = compare_table(runs);
  std::ofstream(out / "table.md") << result.table;
  result.files.push_back((out / "table.md").string());

  const std::vector<gnuplot::Plot> plots = gnuplot::plots_for(runs);
  std::ofstream(out / "compare.gp") << gnuplot::script(runs, plots);
  result.files.push_back((out / "compare.gp").string());
  gnuplot::run(options.gnuplot, out, "compare.gp");
  for (const auto& plot : plots)
    for (const char* ext : {".png", ".svg"}) {
      fs::path file = out / (plot.name + ext);
      if (!fs::exists(file) || fs::file_size(file) == 0)
        throw CompareError("gnuplot wrote no " + file.string());
      result.files.push_back(file.string());
    }
  return result;
}

}  // namespace loco

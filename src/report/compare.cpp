// `loco compare`: reading run directories, the table, and the gnuplot script (see
// include/loco/compare.h and docs/compare.md).
#include "loco/compare.h"

#include <spdlog/spdlog.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include <sys/wait.h>

#include "loco/bytes.h"
#include "loco/metrics.h"
#include "loco/shard.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace loco {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// A loss within half the table's last digit of the baseline's final counts as reaching it, so that
// a run printed with the same final loss (DDP vs one process: ~1e-7 apart) is not "not reached".
constexpr double kReachTolerance = 5e-5;

std::string format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

double number(const json& r, const char* key, double fallback = 0) {
  auto it = r.find(key);
  return it != r.end() && it->is_number() ? it->get<double>() : fallback;
}

bool has_number(const json& r, const char* key) {
  auto it = r.find(key);
  return it != r.end() && it->is_number();
}

// The run's summary.json (null when there is none, or it is torn).
json read_summary(const fs::path& path) {
  std::ifstream in(path);
  return in ? json::parse(in, nullptr, /*allow_exceptions=*/false) : json();
}

// Whether `summary` holds the ratio fields (include/loco/bytes.h); null values count: "does not
// apply" (a DDP run's fp32 DiLoCo ratio).
bool has_ratios(const json& summary) {
  return summary.is_object() && summary.contains("ratio_vs_ddp") &&
         summary.contains("ratio_vs_diloco_fp32");
}

// Takes the ratios from `from` (null ratios are NaN).
void take_ratios(RunData& run, const json& from, const char* source) {
  run.ratio_vs_ddp = number(from, "ratio_vs_ddp", kNaN);
  run.ratio_vs_fp32_diloco = number(from, "ratio_vs_diloco_fp32", kNaN);
  run.ratio_source = source;
}

Config read_config(const fs::path& dir) {
  fs::path path = dir / "config.yaml";
  if (!fs::exists(path))
    throw CompareError(path.string() +
                       ": no such file (every run writes its resolved config there)");
  try {
    return load_config(path.string());
  } catch (const ConfigError& e) {
    throw CompareError(e.what());
  }
}

// The complete lines of a metrics file; warns about the others.
std::vector<json> read_records(const fs::path& path, int64_t* skipped) {
  auto records = read_metrics(path.string(), skipped);
  if (*skipped > 0)
    spdlog::warn(
        "{}: skipped {} incomplete line{} (torn or not a JSON object); using the {} "
        "complete ones",
        path.string(), *skipped, *skipped == 1 ? "" : "s", records.size());
  return records;
}

void require_evaluation(const RunData& run, const fs::path& metrics, size_t lines) {
  if (run.curve.empty())
    throw CompareError(metrics.string() + " has no evaluation (val_loss) yet (" +
                       std::to_string(lines) + " complete line" + (lines == 1 ? "" : "s") +
                       "): nothing to compare");
}

std::string codec_label(const CodecConfig& c) {
  if (c.type == "none") return "fp32";
  if (c.type != "dct") return c.type;
  return "dct " + std::string(c.select == "band" ? "band " : "") + "k" + std::to_string(c.topk) +
         " " + c.values;
}

// "2 sites×2 ranks", or "3 sites (2+1+1 ranks)" when they differ.
std::string sites_label(const std::vector<SiteConfig>& sites) {
  bool same = true;
  std::string ranks;
  for (const auto& s : sites) {
    same = same && s.ranks == sites[0].ranks;
    ranks += (ranks.empty() ? "" : "+") + std::to_string(s.ranks);
  }
  std::string n = std::to_string(sites.size()) + " sites";
  return same ? n + "×" + std::to_string(sites[0].ranks) + " ranks" : n + " (" + ranks + " ranks)";
}

// A single or DDP run (rank 0's directory), or one site run alone (plain DDP).
RunData read_trainer_run(const std::string& dir, const Config& config,
                         const std::vector<json>& records) {
  RunData run;
  run.dir = dir;
  run.config = config;
  const auto& sync = config.sync;
  const bool one_site = sync.sites.size() == 1;
  run.kind = sync.mode == Mode::kDdp || one_site ? "ddp" : "single";
  run.workers = one_site ? sync.sites[0].ranks : run.kind == "ddp" ? sync.workers : 1;
  const double w = double(run.workers);
  if (run.kind == "single")
    run.label = "single";
  else
    run.label = "ddp " + std::to_string(run.workers) + (run.workers == 1 ? " rank" : " ranks") +
                (one_site ? " (site " + sync.sites[0].name + ")" : "");
  double up = 0, down = 0;
  int64_t reduced_steps = 0;
  for (const auto& r : records) {
    if (has_number(r, "bytes_up")) ++reduced_steps;
    up += number(r, "bytes_up"), down += number(r, "bytes_down");
    run.tokens = std::max(run.tokens, number(r, "tokens") * w);
    run.wall_s = std::max(run.wall_s, number(r, "wall_s"));
    if (has_number(r, "val_loss"))
      run.curve.push_back({number(r, "tokens") * w, number(r, "wall_s"), (up + down) * w,
                           number(r, "val_loss"), number(r, "val_bpb", kNaN)});
  }
  run.bytes_up_per_worker = up, run.bytes_down_per_worker = down;
  // Rank 0 (or the single process) writes summary.json when the run ends; before that (still
  // running, or stopped), the same fields from what its lines counted so far.
  json summary = read_summary(fs::path(dir) / "summary.json");
  const bool own = has_ratios(summary);
  if (!own)
    summary = ddp_run_bytes(param_count(config.model), run.workers, reduced_steps, up, down);
  take_ratios(run, summary, own ? "summary.json" : "computed");
  run.bytes_total = number(summary, "bytes_total", (up + down) * w);
  return run;
}

bool is_consensus(const json& r) {
  auto c = r.find("consensus");
  return c != r.end() && c->is_boolean() && c->get<bool>();
}

// The mean over run/worker-k/metrics.jsonl of each worker's summed `bytes_up` / `bytes_down`
// (DiLoCo traffic; a multi-site worker-k is site k's rank 0). False when there is none.
bool per_worker_bytes(const fs::path& run, double* up, double* down) {
  int workers = 0;
  *up = *down = 0;
  if (!fs::is_directory(run)) return false;
  for (const auto& entry : fs::directory_iterator(run)) {
    const std::string name = entry.path().filename().string();
    const fs::path metrics = entry.path() / "metrics.jsonl";
    if (name.rfind("worker-", 0) != 0 || !fs::exists(metrics)) continue;
    int64_t skipped = 0;
    for (const auto& r : read_records(metrics, &skipped))
      *up += number(r, "bytes_up"), *down += number(r, "bytes_down");
    ++workers;
  }
  if (workers == 0) return false;
  *up /= workers, *down /= workers;
  return true;
}

// A run with a coordinator (DiLoCo, demo, multi-site); `coord` holds its metrics.
RunData read_coordinated_run(const std::string& dir, const fs::path& coord, const Config& config,
                             const std::vector<json>& records) {
  RunData run;
  run.dir = dir;
  run.config = config;
  const auto& sync = config.sync;
  run.kind = mode_name(sync.mode);
  run.workers = sync.sites.empty() ? sync.workers : int64_t(sync.sites.size());
  run.label = run.kind + " " +
              (sync.sites.empty() ? std::to_string(sync.workers) + "w" : sites_label(sync.sites)) +
              " H=" + std::to_string(sync.inner_steps) + " " + codec_label(sync.codec);
  double up = 0, down = 0;
  int64_t rounds = 0;
  const json* last_ratios = nullptr;
  for (const auto& r : records) {
    if (!is_consensus(r)) {  // a round line: that round's traffic, all workers
      up += number(r, "bytes_up"), down += number(r, "bytes_down");
      rounds = std::max<int64_t>(rounds, int64_t(number(r, "round")));
    }
    run.bytes_total = number(r, "bytes_total", up + down);
    run.tokens = std::max(run.tokens, number(r, "tokens"));
    run.wall_s = std::max(run.wall_s, number(r, "wall_s"));
    if (has_number(r, "ratio_vs_ddp") && has_number(r, "ratio_vs_diloco_fp32")) last_ratios = &r;
    if (has_number(r, "val_loss"))
      run.curve.push_back({number(r, "tokens"), number(r, "wall_s"), run.bytes_total,
                           number(r, "val_loss"), number(r, "val_bpb", kNaN)});
  }
  // Per worker: the workers' own sync lines where their directories are there (the coordinator
  // counts a round's download only in the next round's line, so its lines miss the last one).
  if (!per_worker_bytes((fs::absolute(coord) / "..").lexically_normal(), &run.bytes_up_per_worker,
                        &run.bytes_down_per_worker)) {
    run.bytes_up_per_worker = up / double(run.workers);
    run.bytes_down_per_worker = down / double(run.workers);
  }
  json summary = read_summary(coord / "summary.json");
  if (has_number(summary, "bytes_total")) run.bytes_total = number(summary, "bytes_total");
  if (has_ratios(summary)) {
    take_ratios(run, summary, "summary.json");
  } else if (last_ratios) {  // stopped before its summary: its last line that carries them
    take_ratios(run, *last_ratios, "metrics.jsonl");
  } else {  // a run older than those fields: bytes.h's formulas, every worker in every round
    const int64_t n = param_count(config.model);
    const double fp32 = double(rounds) * fp32_diloco_round_bytes(n, run.workers);
    const double ddp = double(rounds * sync.inner_steps) * ddp_step_bytes(n, run.workers);
    const bool sent = run.bytes_total > 0;
    run.ratio_vs_ddp = sent ? ddp / run.bytes_total : kNaN;
    run.ratio_vs_fp32_diloco = sent ? fp32 / run.bytes_total : kNaN;
    run.ratio_source = "computed";
  }
  return run;
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

std::string gnuplot_string(const std::string& s) {  // single-quoted: only ' is special
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

constexpr int kPointTypes[] = {7, 5, 9, 13, 11, 15};  // gnuplot's filled circle, square, ...

struct Plot {
  std::string name, title, xlabel, x;  // x: a gnuplot `using` expression for the x column
  bool log_x = false;
  std::string x_format;
};

// The gnuplot script: every run's curve as an inline data block, then each plot in PNG and SVG.
std::string gnuplot_script(const std::vector<RunData>& runs, const std::vector<Plot>& plots) {
  std::ostringstream s;
  s << "# Written by `loco compare`; run `gnuplot compare.gp` in this directory to redraw.\n"
    << "set encoding utf8\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    s << "$run" << i << " << EOD\n# tokens wall_s bytes val_loss val_bpb  (" << runs[i].dir
      << ")\n";
    for (const auto& p : runs[i].curve)
      s << format("%.17g", p.tokens) << ' ' << format("%.17g", p.wall_s) << ' '
        << format("%.17g", p.bytes) << ' ' << format("%.17g", p.val_loss) << ' '
        << format("%.17g", p.val_bpb) << "\n";
    s << "EOD\n";
  }
  s << "set grid lc rgb '#dddddd'\nset key outside right top vertical Left reverse box\nset border "
       "3\n"
    << "set tics nomirror\nset ylabel 'val loss (nats per token)'\n";
  for (const auto& plot : plots) {
    s << "\n# " << plot.title << "\n"
      << "set title " << gnuplot_string(plot.title) << "\n"
      << "set xlabel " << gnuplot_string(plot.xlabel) << "\n"
      << (plot.log_x ? "set logscale x 10\nset xrange [*:*]\n"
                     : "unset logscale x\nset xrange [0:*]\n")
      << "set format x " << gnuplot_string(plot.x_format) << "\n";
    std::string command = "plot";
    const char* sep = " ";
    for (size_t i = 0; i < runs.size(); ++i) {
      if (plot.log_x && !(runs[i].bytes_total > 0)) continue;  // sent nothing: no point on log x
      command += sep + std::string("$run") + std::to_string(i) + " using (" + plot.x +
                 "):4 with linespoints lt " + std::to_string(i % 8 + 1) +  // same colour everywhere
                 " lw 2 pt " + std::to_string(kPointTypes[i % 6]) + " ps 0.8 title " +
                 gnuplot_string(runs[i].label);
      sep = ", \\\n     ";
    }
    for (const char* term : {"png", "svg"}) {
      if (std::string(term) == "png")
        s << "set terminal pngcairo size 1100,600 noenhanced font 'sans,11'\n";
      else
        s << "set terminal svg size 1100,600 dynamic noenhanced font 'sans,11' background "
             "'white'\n";
      s << "set output '" << plot.name << "." << term << "'\n" << command << "\nunset output\n";
    }
  }
  return s.str();
}

// Runs gnuplot on `script` in `dir`. Throws CompareError when it is missing or fails.
void run_gnuplot(const std::string& gnuplot, const fs::path& dir, const std::string& script) {
  std::string command =
      "cd " + shell_quote(dir.string()) + " && " + shell_quote(gnuplot) + " " + script + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw CompareError("cannot start a shell for gnuplot");
  std::string output;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) output.append(buf.data(), n);
  int status = ::pclose(pipe);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string where = "; table.md and " + script + " are written in " + dir.string();
  if (code == 127)
    throw CompareError("gnuplot not found ('" + gnuplot +
                       "'): install Debian's gnuplot-nox (apt-get install gnuplot-nox), then run "
                       "`gnuplot " +
                       script + "` there or `loco compare` again" + where);
  if (code != 0)
    throw CompareError("gnuplot failed (exit " + std::to_string(code) +
                       "): " + output.substr(0, 400) + where);
  if (!output.empty())
    spdlog::warn("gnuplot: {}", output.substr(0, output.find_last_not_of('\n') + 1));
}

}  // namespace

RunData read_run(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw CompareError(dir + ": no such directory");
  const fs::path coord = root / "coordinator";
  int64_t skipped = 0;
  if (fs::exists(coord / "metrics.jsonl")) {
    auto records = read_records(coord / "metrics.jsonl", &skipped);
    RunData run = read_coordinated_run(dir, coord, read_config(coord), records);
    run.skipped_lines = skipped;
    require_evaluation(run, coord / "metrics.jsonl", records.size());
    return run;
  }
  if (!fs::exists(root / "metrics.jsonl"))
    throw CompareError(dir +
                       " is not a run: it holds neither metrics.jsonl (a single or DDP run) "
                       "nor coordinator/metrics.jsonl (a DiLoCo, demo or multi-site run)");
  Config config = read_config(root);
  auto records = read_records(root / "metrics.jsonl", &skipped);
  const auto& sync = config.sync;
  RunData run;
  if (coordinated(sync.mode) && sync.sites.size() != 1) {
    // The coordinator's own directory, given directly; or one worker's, which is refused.
    bool coordinator = false;
    for (const auto& r : records) coordinator = coordinator || r.contains("bytes_total");
    if (!coordinator)
      throw CompareError(dir + " is one worker of a " + std::string(mode_name(sync.mode)) +
                         " run: pass the run's directory, the one that holds coordinator/ (" +
                         (root / "..").lexically_normal().string() + ")");
    run = read_coordinated_run(dir, root, config, records);
  } else {
    run = read_trainer_run(dir, config, records);
  }
  run.skipped_lines = skipped;
  require_evaluation(run, root / "metrics.jsonl", records.size());
  return run;
}

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

  double max_wall = 0;
  bool any_bytes = false;
  for (const auto& r : runs) {
    max_wall = std::max(max_wall, r.wall_s);
    any_bytes = any_bytes || r.bytes_total > 0;
  }
  const bool minutes = max_wall > 600, hours = max_wall > 3 * 3600;
  std::vector<Plot> plots = {{"val_loss_vs_tokens", "val loss vs tokens",
                              "tokens processed (all workers)", "$1", false, "%.1s%c"},
                             {"val_loss_vs_time", "val loss vs wall-clock time",
                              std::string("wall-clock time (") +
                                  (hours     ? "h"
                                   : minutes ? "min"
                                             : "s") +
                                  ")",
                              hours     ? "$2/3600"
                              : minutes ? "$2/60"
                                        : "$2",
                              false, "%g"}};
  if (any_bytes)
    plots.push_back({"val_loss_vs_bytes", "val loss vs bytes communicated",
                     "bytes communicated (cumulative, all workers, up + down; log scale)",
                     "$3 > 0 ? $3 : NaN", true, "%.0s %cB"});
  else
    spdlog::warn("no run communicated any bytes: no val_loss_vs_bytes plot");
  std::ofstream(out / "compare.gp") << gnuplot_script(runs, plots);
  result.files.push_back((out / "compare.gp").string());
  run_gnuplot(options.gnuplot, out, "compare.gp");
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

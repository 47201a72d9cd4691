// `loco compare` reading one run directory (read_run in include/loco/compare.h): which kind of
// run it is (single, DDP, DiLoCo, demo, multi-site), its config, its evaluation curve and bytes
// from metrics.jsonl, and its ratios from summary.json (or the metrics, or bytes.h's formulas).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "loco/bytes.h"
#include "loco/compare.h"
#include "loco/metrics.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace loco {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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

// A demo consensus line: the model reported, the consensus's and the replicas' val losses.
void read_replicas(RunData& run, const json& r) {
  run.reported = r.value("reported", std::string("consensus"));  // older runs: the consensus
  run.consensus_val_loss = number(r, "consensus_val_loss", number(r, "val_loss"));
  const json& spread = r.contains("replica_val_loss") ? r["replica_val_loss"] : json();
  if (!spread.is_object()) return;
  run.replicas_mean = number(spread, "mean", kNaN);
  run.replicas_min = number(spread, "min", kNaN);
  run.replicas_max = number(spread, "max", kNaN);
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
  if (sync.mode == Mode::kStreaming)
    run.label += fmt::format(" P={} tau={} alpha={}", sync.streaming.fragments,
                             sync.streaming.delay_steps, sync.streaming.alpha);
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
    if (is_consensus(r) && has_number(r, "val_loss")) read_replicas(run, r);
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
  for (const json* from :
       std::initializer_list<const json*>{&summary, records.empty() ? nullptr : &records.back()})
    if (from && has_number(*from, "emissions_g") && std::isnan(run.emissions_g)) {
      run.energy_kwh = number(*from, "energy_kwh", kNaN);
      run.emissions_g = number(*from, "emissions_g");
    }
  if (has_ratios(summary)) {
    take_ratios(run, summary, "summary.json");
  } else if (last_ratios) {  // stopped before its summary: its last line that carries them
    take_ratios(run, *last_ratios, "metrics.jsonl");
  } else {  // a run older than those fields: bytes.h's formulas, every worker in every round
    const int64_t n = param_count(config.model);
    const double fp32 = double(rounds) * fp32_diloco_round_bytes(n, run.workers);
    const double ddp = double(rounds * round_steps(sync)) * ddp_step_bytes(n, run.workers);
    const bool sent = run.bytes_total > 0;
    run.ratio_vs_ddp = sent ? ddp / run.bytes_total : kNaN;
    run.ratio_vs_fp32_diloco = sent ? fp32 / run.bytes_total : kNaN;
    run.ratio_source = "computed";
  }
  return run;
}

// The restarts and give-ups `loco launch` recorded in the run's launch_events.jsonl, if any.
void read_launch_events(const fs::path& root, RunData& run) {
  std::ifstream in(root / "launch_events.jsonl");
  if (!in) return;
  run.restarts = 0;
  std::string line;
  while (std::getline(in, line)) {
    json e = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!e.is_object() || !e.contains("event")) continue;
    run.restarts += e["event"] == "restarted";
    run.given_up += e["event"] == "given_up";
  }
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
    read_launch_events(root, run);
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
  read_launch_events(root, run);
  return run;
}

}  // namespace loco

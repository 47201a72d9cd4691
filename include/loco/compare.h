// `loco compare RUN_DIR...`: reads finished (or still running) runs and writes plots of val loss
// against tokens, wall-clock time and bytes communicated, plus a markdown table (docs/compare.md).
//
// A run directory is any of:
//   single / DDP   RUN/config.yaml + RUN/metrics.jsonl (rank 0's; DDP ranks r > 0 in RUN/rank-r/)
//   DiLoCo / demo  RUN/coordinator/{config.yaml, metrics.jsonl, summary.json} + RUN/worker-k/
//   multi-site     as DiLoCo (site k is worker-k); one site alone is plain DDP in RUN/
// A directory with neither RUN/metrics.jsonl nor RUN/coordinator/metrics.jsonl is not a run.
//
// Conventions (all runs on one scale):
//   tokens  global tokens processed (DDP: rank 0's count times the ranks)
//   bytes   the method's traffic, up + down, all workers, cumulative. DiLoCo: the coordinator's
//           `bytes_total` (setup pulls and demo's consensus traffic excluded, as in its ratios).
//           DDP: the per-rank ring traffic (`bytes_up` + `bytes_down`) summed over steps, times
//           the ranks. A single run sends nothing and has no point on the bytes plot.
//   curve   single/DDP: rank 0's evaluation lines; DiLoCo/demo: the coordinator's lines with
//           `val_loss` (demo: its consensus lines).
//   ratios  read, never recomputed, from the summary.json of the process that owns the run (the
//           coordinator's; single/DDP: rank 0's in RUN/), whose byte fields include/loco/bytes.h
//           defines; see RunData::ratio_source for runs without one.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "loco/config.h"

namespace loco {

// Thrown for a run that cannot be read or runs that cannot be compared; the message names the
// path(s) and is meant for the user as is.
struct CompareError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One evaluation of a run's global model.
struct EvalPoint {
  double tokens = 0;  // global tokens processed so far
  double wall_s = 0;  // seconds since the run started
  double bytes = 0;   // cumulative bytes communicated (see the conventions above)
  double val_loss = 0;
  double val_bpb = 0;
};

struct RunData {
  std::string dir;      // as given on the command line
  std::string kind;     // single | ddp | diloco | demo
  std::string label;    // "diloco 4w H=25 dct k32 int8", "ddp 4 ranks", "single", ...
  Config config;        // the run's resolved config (the coordinator's for DiLoCo)
  int64_t workers = 1;  // DDP ranks, DiLoCo workers or sites
  std::vector<EvalPoint> curve;
  double tokens = 0;               // global tokens at the last complete metrics line
  double wall_s = 0;               // wall_s of the last complete metrics line
  double bytes_total = 0;          // cumulative bytes at the end (all workers)
  double bytes_up_per_worker = 0;  // the method's traffic per worker, summed over the run
  double bytes_down_per_worker = 0;
  // Communication reduction: what DDP / fp32 DiLoCo would have sent for the same steps (rounds)
  // over bytes_total, as the run's summary.json says (include/loco/bytes.h). NaN where it does
  // not apply (single; fp32 DiLoCo for DDP).
  double ratio_vs_ddp = 0;
  double ratio_vs_fp32_diloco = 0;
  // Where they came from: "summary.json"; "metrics.jsonl" (a coordinator's last line carrying
  // them: a run stopped before its summary); "computed" (neither: a DDP or single run stopped
  // early, or a run older than these fields), with include/loco/bytes.h's formulas.
  std::string ratio_source;
  int64_t skipped_lines = 0;  // incomplete lines of the main metrics file (warned)
  // From run.dir/launch_events.jsonl (`loco launch`, docs/faults.md): processes the launcher
  // restarted after a failure, and gave up on; -1 when the run has no events file.
  int64_t restarts = -1;
  int64_t given_up = 0;
  // A run under a carbon-intensity trace (docs/curtailment.md): its sites' energy and emissions
  // from summary.json (or its last metrics record that has them); NaN for other runs.
  double energy_kwh = std::numeric_limits<double>::quiet_NaN();
  double emissions_g = std::numeric_limits<double>::quiet_NaN();
  // The decoupled method (sync.mode demo) at its last consensus round: which model the run
  // reports ("w0", "consensus"; a run older than sync.report_model: "consensus"), the consensus's
  // val loss and the replicas' own (mean, min, max); empty / NaN for other methods.
  std::string reported;
  double consensus_val_loss = std::numeric_limits<double>::quiet_NaN();
  double replicas_mean = std::numeric_limits<double>::quiet_NaN();
  double replicas_min = std::numeric_limits<double>::quiet_NaN();
  double replicas_max = std::numeric_limits<double>::quiet_NaN();

  const EvalPoint& final_eval() const { return curve.back(); }
};

// Reads one run. Throws CompareError: not a run, no config, no evaluation yet, a DiLoCo worker's
// directory instead of the run's. Warns (spdlog) about incomplete metrics lines it skipped.
RunData read_run(const std::string& dir);

// Throws CompareError unless every run used the same tokenizer and val set as the first (by
// content hash of data.tokenizer and data.val); the message names both runs and the file.
void check_comparable(const std::vector<RunData>& runs);

// The markdown table; the first run is the baseline for "time to reach the baseline's final
// val loss": the first wall_s at which val_loss <= the baseline's final + 5e-5 (half the table's
// last printed digit), or "not reached".
std::string compare_table(const std::vector<RunData>& runs);

struct CompareOptions {
  std::vector<std::string> runs;  // run directories; the first is the baseline
  std::string out_dir = "compare";
  std::string gnuplot = "gnuplot";  // the gnuplot binary (Debian: gnuplot-nox)
};

struct CompareResult {
  std::string table;               // markdown, as written to table.md
  std::vector<std::string> files;  // every file written
};

// Reads the runs, checks that they compare, writes table.md, compare.gp (the gnuplot script,
// data inline) and val_loss_vs_{tokens,time,bytes}.{png,svg} into out_dir. Throws CompareError;
// when gnuplot is missing or fails, after table.md and compare.gp are written.
CompareResult compare_runs(const CompareOptions& options);

}  // namespace loco

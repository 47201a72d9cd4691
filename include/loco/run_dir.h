// A process's run directory, set up the same way by every kind of process: `loco train` (single
// and every DDP rank), `loco worker` (a DiLoCo worker, a site's ranks) and `loco coordinator`.
//
//   run.dir/config.yaml     the resolved config, written at every start
//   run.dir/metrics.jsonl   one record per line (metrics.h), with tb/ beside it
//   run.dir/checkpoints/    step_NNNNNNNN.pt (checkpoint.h)
//
// Checkpoints mark a run that someone may still want: a process that does not say --resume
// refuses a run.dir holding any, before it writes anything there, so nothing of an earlier run
// (its config.yaml, metrics.jsonl, summary.json, checkpoints) is touched. `loco launch` runs the
// same check on every part's run.dir before it starts any process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "loco/config.h"

namespace loco {

class MetricsWriter;

// How a process starts in its run.dir.
enum class RunStart {
  kFresh,   // a new run: refused when run.dir holds checkpoints
  kResume,  // continues from the newest checkpoint in run.dir (an error when there is none)
  kRejoin,  // a DiLoCo worker taking part again in the run it left (`loco worker --resume`,
            // a worker the launcher restarts for sync.schedule): the coordinator holds the run's
            // state, so nothing is restored; its files stay and metrics.jsonl goes on
};

// Throws ConfigError naming `dir` when it holds checkpoints ("pass --resume to continue it, or
// choose another run.dir"). Reads only.
void refuse_used_run_dir(const std::string& dir);

// Checks `dir` for `start` (refuse_used_run_dir for kFresh; ConfigError when kResume finds no
// checkpoint), then creates it. Returns the newest checkpoint for kResume, "" otherwise. Writes
// nothing into `dir` besides creating it.
std::string prepare_run_dir(const std::string& dir, RunStart start);

// Writes config.yaml into config.run.dir and opens its metrics.jsonl. `keep_metrics_up_to` >= 0
// (a resume) first drops the records and events of later steps (MetricsWriter).
std::unique_ptr<MetricsWriter> open_run_files(const Config& config, int64_t keep_metrics_up_to);

}  // namespace loco

// The processes of one `loco launch` (include/loco/launch.h), planned before any starts: a Part
// per process (its arguments, environment, run.dir and, at run time, its pid and output pipe),
// the check that no part's run.dir holds an earlier run, how sync.link is shaped for the parts,
// the --dry-run listing of them and the --emit scripts that run them on real machines.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loco/config.h"
#include "loco/launch.h"
#include "netns.h"

namespace loco::launcher {

struct Part {
  using Env = std::vector<std::pair<std::string, std::string>>;
  Part(std::string label, std::vector<std::string> args, Env env = {})
      : label(std::move(label)), args(std::move(args)), env(std::move(env)) {}

  std::string label;
  std::vector<std::string> args;  // after the executable
  Env env;
  std::string run_dir;  // its run.dir (a DDP rank r > 0's rank-r/ links its checkpoints)
  std::string site;     // the processes one --emit script starts together on one machine or
                        // Slurm allocation: a site of sync.sites, a DiLoCo worker (w0, w1, ..),
                        // "ddp" (DDP's ranks) or "train"; "" for the coordinator
  pid_t pid = -1;
  int fd = -1;              // read end of its stdout+stderr
  std::string pending;      // a partial line
  int status = -1;          // exit code once it ended (128 + the signal that ended it)
  int signal = 0;           // the signal that ended it (0: it exited)
  int member = -1;          // the coordinator member it belongs to (a worker, a site); -1: none
  std::string group;        // parts that fail and restart together: "run" (a trainer, the DDP
                            // ranks), "site NAME" (a site's ranks); "" alone (a worker, coord)
  bool group_stop = false;  // stopped by the launcher because its group restarts or goes down
  std::chrono::steady_clock::time_point kill_at;  // group_stop: SIGKILL if still there by then
  std::string netns;             // the network namespace it runs in (sync.link shaped by netns)
  bool waiting = false;          // down by the schedule (sync.schedule), to be started later
  bool scheduled_stop = false;   // the schedule stopped it: its exit is no failure
  bool down = false;             // failed and left down (sync.on_failure continue, given up)
  bool restart_pending = false;  // failed; restarts at restart_at (sync.on_failure restart)
  std::chrono::steady_clock::time_point restart_at;
  int restarts = 0;        // how many times sync.on_failure restarted it
  bool came_back = false;  // a member started again midway (restart, schedule): it may still be
                           // on its way back into the run when the coordinator ends it
  bool run_ended = false;  // the run ended before it was back: its exit is no failure
};

// Every process of the run in `config`, each given `o`'s config file and overrides.
std::vector<Part> plan(const Config& config, const LaunchOptions& o);

// Throws ConfigError when a part's run.dir already holds checkpoints of an earlier run.
void refuse_used_run_dirs(const std::vector<Part>& parts);

// `loco launch --resume`: the run in run.dir goes on where it was stopped (Ctrl-C, SIGTERM, a
// machine restarted). Throws ConfigError when no launch ran there, when the run finished, or
// with sync.schedule; otherwise gives every part its command line for continuing (resume_part).
void continue_run(const Config& config, std::vector<Part>& parts);

// Decides how sync.link is shaped for this run and tells every part (in shape_link.cpp); returns
// the namespaces when netns shapes it (they live as long as the result), else null.
std::unique_ptr<NetnsLink> shape_link(const Config& config, std::vector<Part>& parts);

// --dry-run: the commands that run the same experiment across hosts (in dry_run.cpp).
void print_dry_run(std::ostream& out, const Config& config, const std::vector<Part>& parts,
                   bool scheduled);

// `s` as one shell word: as it is when nothing in it is special to the shell, else in single
// quotes (in dry_run.cpp).
std::string shell_quote(const std::string& s);

// --emit DIR: coordinator.sh, site-NAME.sh and site-NAME.sbatch per site, config.yaml (a copy
// of o.config_path) and plan.txt (the --dry-run listing), from `parts` (in emit.cpp; the
// scripts' text in emit_scripts.cpp).
void emit_scripts(const Config& config, const std::vector<Part>& parts, const LaunchOptions& o,
                  bool scheduled);

}  // namespace loco::launcher

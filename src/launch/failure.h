// `loco launch`'s failure policy (sync.on_failure, sync.restart_limit, sync.restart_window_s;
// docs/faults.md): what to do about a process that exited abnormally — a non-zero status or a
// signal the launcher did not send, nor the schedule. Workers restart (rejoining with --resume)
// or stay down; the coordinator restarts from its checkpoint. Ranks restart with their group
// (Part::group), since a rank cannot rejoin a running process group: a site's ranks all rejoin
// the run (or all stay down), a trainer or the DDP ranks all resume from the newest checkpoint.
// Failures are counted per group.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "loco/config.h"
#include "plan.h"

namespace loco::launcher {

struct Decision {
  enum Kind { kRestart, kLeaveDown, kGiveUp, kStop } kind = kStop;
  double delay_s = 0;  // kRestart: the backoff
  int attempt = 0;     // kRestart: failures within the window, this one included
  std::string reason;  // one line for the log and the events file
};

// The action's name in the events file: restart, continue, give_up, stop.
const char* action_name(Decision::Kind kind);

class FailurePolicy {
 public:
  explicit FailurePolicy(const Config& config);

  // What to do about `p`, which failed just now. `coordinator_done`: the coordinator finished the
  // run (exited 0); `round`: its last closed round (-1 unknown).
  Decision on_failure(const Part& p, bool coordinator_done, int64_t round);

  // Whether the run can go on with `remaining` workers (sync.coordinator.min_workers); else why
  // not, in one line.
  std::string too_few_workers(int64_t remaining) const;

 private:
  Decision restart_or_give_up(const Part& p);

  const Config& config_;
  int64_t total_rounds_;
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> failures_;
};

// The command line of a coordinator, a trainer or a DDP rank (or a lone site's) for a restart:
// --resume once its checkpoints dir holds a checkpoint; before that, a fresh start, its
// metrics.jsonl (rounds or steps no checkpoint kept) moved to metrics.lost.jsonl so that every
// round or step is logged once.
void prepare_resume(Part& p);

// The command line of a part continuing the run it was part of (a restart, `loco launch
// --resume`): a worker or a site's rank rejoins (--resume); the coordinator, a trainer and the
// DDP ranks as prepare_resume says.
void resume_part(Part& p);

}  // namespace loco::launcher

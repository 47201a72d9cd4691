// `loco launch` running the planned parts: starting each as a child process, printing its output
// line by line with its label, carrying out sync.on_failure when one fails (restart it, leave it
// down, or stop the rest), stopping every part on Ctrl-C, recording it all in the events file,
// and replaying the schedule on the way.
#pragma once

#include <string>
#include <vector>

#include "events.h"
#include "failure.h"
#include "plan.h"
#include "schedule_replay.h"

namespace loco::launcher {

// Starts `p` as a child of `exe`, its stdout and stderr into a pipe (p.fd); in p.netns if set.
void start(Part& p, const std::string& exe);

// From now on SIGINT and SIGTERM stop the launch: every part is stopped (SIGTERM; a second signal
// sends SIGKILL), and supervise returns 130.
void catch_stop_signals();

// Starts the parts (those the schedule has down wait), prints their output until every one has
// ended (restarting those sync.on_failure restarts) and returns the launch's exit code: 0 when
// the run finished (faults survived included), 1 when a failure stopped it, 130 when
// interrupted. Every start, exit, restart and stop goes to `events`.
int supervise(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe,
              const Config& config, EventLog& events);

}  // namespace loco::launcher

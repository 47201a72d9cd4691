// `loco launch` running the planned parts: starting each as a child process, printing its output
// line by line with its label, stopping the rest when one fails or on Ctrl-C, and replaying the
// schedule on the way.
#pragma once

#include <string>
#include <vector>

#include "plan.h"
#include "schedule_replay.h"

namespace loco::launcher {

// Starts `p` as a child of `exe`, its stdout and stderr into a pipe (p.fd); in p.netns if set.
void start(Part& p, const std::string& exe);

// From now on SIGINT and SIGTERM stop the launch: every part is stopped, and supervise returns 130.
void catch_stop_signals();

// Starts the parts (those the schedule has down wait), prints their output until every one has
// ended and returns the launch's exit code: 0, 1 when a part failed, 130 when interrupted.
int supervise(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe);

}  // namespace loco::launcher

// `loco launch`'s record of what happened to its processes: run.dir/launch_events.jsonl, one JSON
// object a line (docs/faults.md, "The events file"): time (unix s), process (its label: coord,
// w0, r1, site/0), pid, event (started, exited, restarted, given_up, stopped), status (an exit
// code) or signal (the number of the signal that ended it), action (what the launcher did about
// it), round (the coordinator's last closed round, when it has logged one) and, for some events,
// reason, delay_s or attempt. A new launch starts a new file; `loco launch --resume` appends.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "plan.h"

namespace loco::launcher {

class EventLog {
 public:
  EventLog() = default;  // writes nothing
  // Starts `path` afresh (`append`: goes on after its lines, for a resumed run);
  // `coordinator_metrics` is where the round comes from ("": no round).
  EventLog(const std::string& path, std::string coordinator_metrics, bool append = false);

  // One line about `p` (its label and pid), `fields` added.
  void write(const Part& p, const std::string& event, nlohmann::json fields = {});

 private:
  std::ofstream out_;
  std::string metrics_;
};

// The highest "round" in the last lines of a metrics.jsonl; -1 when it has none (or is missing).
int64_t last_logged_round(const std::string& metrics_path);

// How a part's exit reads: "status 1" or "signal 9 (Killed)".
std::string describe_exit(const Part& p);

}  // namespace loco::launcher

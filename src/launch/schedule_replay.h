// `loco launch` replaying sync.schedule (include/loco/schedule.h): the schedule, checked against
// the run, and the replay that starts and stops workers as the coordinator's rounds go by.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "loco/config.h"
#include "loco/coord_client.h"
#include "loco/schedule.h"
#include "events.h"
#include "plan.h"

namespace loco::launcher {

// sync.schedule: only the members of a coordinated run come and go (workers w0, w1, ..., or the
// sites of sync.sites by name), and the file names only members of this run.
Schedule load_schedule(const Config& config);

// Replays the schedule: asks the coordinator for its round (at most 5 times a second), stops the
// members whose window closed (SIGTERM to every rank of a site: rank 0 leaves the coordinator)
// and starts those whose window opened, every rank of a site together once all of them have
// exited (with --resume: rank 0 rejoins and hands the state to its ranks). A member is not
// started for the last round: it would join for the round after it. While no member is up it
// says so every 30 s.
class ScheduleReplay {
 public:
  ScheduleReplay(const Config& config, Schedule schedule)
      : config_(config),
        schedule_(std::move(schedule)),
        start_(std::chrono::steady_clock::now()),
        total_rounds_(config.train.max_steps / round_steps(config.sync)),
        address_(config.sync.coordinator.address) {}

  // Where its starts and stops are recorded (launch_events.jsonl).
  void log_to(EventLog* events) { events_ = events; }

  // Where the coordinator listens when it is not config's address (netns: on the bridge).
  void reach_at(const std::string& address) { address_ = address; }

  bool active() const { return !schedule_.empty(); }
  bool up_at_start(const Part& p) const;
  // Whether the schedule has `p`'s member down now (a failed site restarting then stays down).
  bool down_now(const Part& p) const;
  // The schedule's name for `p`: its site's name, a worker's label; "" for the coordinator.
  static std::string member_name(const Part& p);

  // Returns how many parts it started.
  size_t step(std::vector<Part>& parts, const std::string& exe);

 private:
  const Config& config_;
  Schedule schedule_;
  std::chrono::steady_clock::time_point start_, last_poll_, last_waiting_log_;
  std::unique_ptr<CoordinatorClient> client_;
  int64_t round_ = 0, total_rounds_;
  std::string address_;
  EventLog* events_ = nullptr;
};

}  // namespace loco::launcher

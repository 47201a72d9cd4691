// `loco launch` replaying sync.schedule: checks the schedule file against the run, then polls the
// coordinator's round and starts or stops the listed workers (schedule_replay.h).
#include "schedule_replay.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "supervise.h"

namespace loco::launcher {

Schedule load_schedule(const Config& config) {
  if (config.sync.schedule.empty()) return {};
  if (!coordinated(config.sync.mode) || !config.sync.sites.empty())
    throw ConfigError(
        "sync.schedule: workers come and go only in sync.mode diloco or demo without "
        "sync.sites (sync.mode is '" +
        std::string(mode_name(config.sync.mode)) + "'" +
        (config.sync.sites.empty() ? "" : ", with sites") + ")");
  Schedule schedule = Schedule::load(config.sync.schedule);
  for (const auto& name : schedule.sites()) {
    bool known = name.size() > 1 && name.size() < 10 && name[0] == 'w' &&
                 name.find_first_not_of("0123456789", 1) == std::string::npos &&
                 std::stoll(name.substr(1)) < config.sync.workers;
    if (!known)
      throw ConfigError("sync.schedule: " + config.sync.schedule + ": '" + name +
                        "' is not a worker of this run (w0 .. w" +
                        std::to_string(config.sync.workers - 1) + ")");
  }
  return schedule;
}

size_t ScheduleReplay::step(std::vector<Part>& parts, const std::string& exe) {
  auto now = std::chrono::steady_clock::now();
  if (now - last_poll_ < std::chrono::milliseconds(200)) return 0;
  last_poll_ = now;
  try {
    if (!client_) client_ = std::make_unique<CoordinatorClient>(address_, config_.sync.coordinator);
    round_ = client_->status(2).round;
  } catch (const std::exception&) {
    client_.reset();  // a new channel next time: one that failed may wait out its backoff
    return 0;         // not listening yet, or gone at the end: keep the last round
  }
  double elapsed = std::chrono::duration<double>(now - start_).count();
  size_t started = 0;
  for (auto& p : parts) {
    if (!schedule_.lists(p.label)) continue;
    bool want = schedule_.up(p.label, round_, elapsed) && round_ + 1 < total_rounds_;
    if (want && p.waiting) {
      spdlog::info("launch: schedule: starting {} (round {}, {:.0f} s)", p.label, round_, elapsed);
      p.waiting = false, p.status = -1, p.pending.clear();
      // It takes part in this run again: its run.dir, checked at launch, holds its own files.
      if (std::find(p.args.begin(), p.args.end(), "--resume") == p.args.end())
        p.args.push_back("--resume");
      start(p, exe);
      p.came_back = true;
      if (events_) events_->write(p, "started", {{"action", "schedule"}});
      ++started;
    } else if (!want && p.pid > 0 && p.status < 0 && !p.scheduled_stop) {
      spdlog::info("launch: schedule: stopping {} (round {}, {:.0f} s)", p.label, round_, elapsed);
      p.scheduled_stop = true;
      ::kill(p.pid, SIGTERM);
      if (events_) events_->write(p, "stopped", {{"signal", SIGTERM}, {"reason", "schedule"}});
    }
  }
  return started;
}

}  // namespace loco::launcher

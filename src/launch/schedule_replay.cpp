// `loco launch` replaying sync.schedule: checks the schedule file against the run, then polls the
// coordinator's round and starts or stops the listed workers (schedule_replay.h).
#include "schedule_replay.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "supervise.h"

namespace loco::launcher {

Schedule load_schedule(const Config& config) {
  if (config.sync.schedule.empty()) return {};
  const auto& sites = config.sync.sites;
  if (!coordinated(config.sync.mode) || sites.size() == 1)
    throw ConfigError(
        "sync.schedule: members come and go only in sync.mode diloco or demo, "
        "between sites or workers (sync.mode is '" +
        std::string(mode_name(config.sync.mode)) + "'" +
        (sites.size() == 1 ? ", with a single site" : "") + ")");
  Schedule schedule = Schedule::load(config.sync.schedule);
  std::string names;  // the run's members, for the error
  if (sites.empty()) {
    names = "w0 .. w" + std::to_string(config.sync.workers - 1);
  } else {
    for (const auto& site : sites) names += (names.empty() ? "" : ", ") + site.name;
  }
  for (const auto& name : schedule.sites()) {
    bool known = false;
    if (sites.empty()) {
      known = name.size() > 1 && name.size() < 10 && name[0] == 'w' &&
              name.find_first_not_of("0123456789", 1) == std::string::npos &&
              std::stoll(name.substr(1)) < config.sync.workers;
    } else {
      for (const auto& site : sites) known = known || site.name == name;
    }
    if (!known)
      throw ConfigError("sync.schedule: " + config.sync.schedule + ": '" + name + "' is not a " +
                        (sites.empty() ? "worker" : "site") + " of this run (" + names + ")");
  }
  return schedule;
}

std::string ScheduleReplay::member_name(const Part& p) {
  if (p.member < 0) return "";
  const std::string site = "site ";
  return p.group.rfind(site, 0) == 0 ? p.group.substr(site.size()) : p.label;
}

bool ScheduleReplay::up_at_start(const Part& p) const {
  const std::string name = member_name(p);
  return !schedule_.lists(name) || schedule_.up(name, 0, 0);
}

bool ScheduleReplay::down_now(const Part& p) const {
  const std::string name = member_name(p);
  if (!active() || !schedule_.lists(name)) return false;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return !schedule_.up(name, round_, elapsed);
}

size_t ScheduleReplay::step(std::vector<Part>& parts, const std::string& exe) {
  auto now = std::chrono::steady_clock::now();
  if (now - last_poll_ < std::chrono::milliseconds(200)) return 0;
  last_poll_ = now;
  try {
    if (!client_) client_ = std::make_unique<CoordinatorClient>(address_, config_.sync.coordinator);
    CoordinatorStatus s = client_->status(2);
    round_ = s.round;
    total_rounds_ = s.total_rounds;  // elastic rounds: lowered when the token budget is reached
  } catch (const std::exception&) {
    client_.reset();  // a new channel next time: one that failed may wait out its backoff
    return 0;         // not listening yet, or gone at the end: keep the last round
  }
  double elapsed = std::chrono::duration<double>(now - start_).count();
  // A member is a worker or a site, whose ranks stop and start together.
  std::map<std::string, std::vector<Part*>> members;
  for (auto& p : parts)
    if (schedule_.lists(member_name(p))) members[member_name(p)].push_back(&p);
  size_t started = 0;
  bool any_up = false;
  for (auto& [name, ranks] : members) {
    const bool want = schedule_.up(name, round_, elapsed);
    auto waiting = [](const Part* p) { return p->waiting; };
    bool all_waiting = std::all_of(ranks.begin(), ranks.end(), waiting);
    any_up = any_up || !all_waiting;
    // Every rank has exited: the site starts again as a whole (not for the last round).
    if (want && all_waiting && round_ + 1 < total_rounds_) {
      spdlog::info("launch: schedule: starting {} (round {}, {:.0f} s)", name, round_, elapsed);
      for (Part* p : ranks) {
        p->waiting = false, p->status = -1, p->signal = 0, p->pending.clear();
        // It takes part in this run again: its run.dir, checked at launch, holds its own files.
        if (std::find(p->args.begin(), p->args.end(), "--resume") == p->args.end())
          p->args.push_back("--resume");
        start(*p, exe);
        p->came_back = true;
        if (events_) events_->write(*p, "started", {{"action", "schedule"}});
        ++started;
      }
      any_up = true;
    } else if (!want) {
      bool stopping = false;
      for (Part* p : ranks) {
        if (p->pid <= 0 || p->status >= 0 || p->scheduled_stop || p->down) continue;
        if (!stopping)
          spdlog::info("launch: schedule: stopping {} (round {}, {:.0f} s)", name, round_, elapsed);
        stopping = true;
        p->scheduled_stop = true;
        ::kill(p->pid, SIGTERM);
        if (events_) events_->write(*p, "stopped", {{"signal", SIGTERM}, {"reason", "schedule"}});
      }
    }
  }
  // Members the schedule does not list are always up (unless they failed and stayed down).
  for (auto& p : parts)
    if (p.member >= 0 && !schedule_.lists(member_name(p)) && !p.down) any_up = true;
  if (any_up) {
    last_waiting_log_ = now;
  } else if (now - last_waiting_log_ > std::chrono::seconds(30)) {
    spdlog::info("launch: schedule: no {} is up; waiting (round {}, {:.0f} s)",
                 config_.sync.sites.empty() ? "worker" : "site", round_, elapsed);
    last_waiting_log_ = now;
  }
  return started;
}

}  // namespace loco::launcher

// `loco launch` supervising its processes (supervise.h): starting each (start.cpp), the
// prefixed output of each, the wait for their exits, the failure policy carried out (restart,
// leave down, give up, stop the rest: failure.h), the stop on a signal, the events file, and the
// exit code.
#include "supervise.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <set>

namespace loco::launcher {
namespace {

volatile sig_atomic_t g_interrupted = 0;  // how many SIGINT/SIGTERM came
void on_signal(int) {
  g_interrupted = g_interrupted + 1;
}
volatile sig_atomic_t g_pause = 0;  // SIGUSR1: pause the run at the end of the round
void on_pause(int) {
  g_pause = 1;
}

void print_lines(Part& p, const char* data, size_t n, bool flush) {
  p.pending.append(data, n);
  size_t pos;
  while ((pos = p.pending.find('\n')) != std::string::npos) {
    std::cout << "[" << p.label << "] " << p.pending.substr(0, pos) << "\n";
    p.pending.erase(0, pos + 1);
  }
  if (flush && !p.pending.empty()) {
    std::cout << "[" << p.label << "] " << p.pending << "\n";
    p.pending.clear();
  }
  std::cout.flush();
}

// The events file's fields for an exit: its status or signal and what the launcher does.
nlohmann::json exit_fields(const Part& p, const std::string& action) {
  nlohmann::json j = {{"action", action}};
  if (p.signal > 0)
    j["signal"] = p.signal;
  else
    j["status"] = p.status;
  return j;
}

// One launch's processes from their start to the exit code, a step of the loop per method.
class Supervisor {
 public:
  Supervisor(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe,
             const Config& config, EventLog& events)
      : parts_(parts),
        schedule_(schedule),
        exe_(exe),
        config_(config),
        events_(events),
        policy_(config) {}

  int run() {
    start_all();
    while (running_ > 0 || restarts_pending()) {
      drain_output();
      reap();
      restart_due();
      if (schedule_.active() && !stopping_ && first_failure_.empty() && !g_interrupted)
        running_ += schedule_.step(parts_, exe_);
      stop_when_asked();
      pause_when_asked();
      stop_late_members();
    }
    return exit_code();
  }

 private:
  void start_all() {
    for (auto& p : parts_) {
      if (schedule_.active() && !schedule_.up_at_start(p)) {
        spdlog::info("launch: schedule: {} starts down", p.label);
        p.waiting = true;
        continue;
      }
      start(p, exe_);
      const bool resumed = std::find(p.args.begin(), p.args.end(), "--resume") != p.args.end();
      events_.write(p, "started", {{"action", resumed ? "resume" : "launch"}});
      ++running_;
    }
  }

  // Waits up to 200 ms for output, then prints what every part has written.
  void drain_output() {
    std::vector<pollfd> fds;
    for (auto& p : parts_)
      if (p.fd >= 0) fds.push_back({p.fd, POLLIN, 0});
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 200);
    else
      ::usleep(200000);
    for (auto& p : parts_) {
      if (p.fd < 0) continue;
      pollfd probe{p.fd, POLLIN, 0};
      if (::poll(&probe, 1, 0) > 0) {
        char buf[8192];
        ssize_t n = ::read(p.fd, buf, sizeof(buf));
        if (n > 0)
          print_lines(p, buf, size_t(n), false);
        else
          ::close(p.fd), p.fd = -1, print_lines(p, "", 0, true);
      }
    }
  }

  // Collects the exits of the parts whose output is drained.
  void reap() {
    for (auto& p : parts_) {
      // not started, ended, or its output not drained yet
      if (p.pid < 0 || p.status >= 0 || p.fd >= 0) continue;
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) != p.pid) continue;
      p.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + p.signal;
      --running_;
      if (p.run_ended) {
        spdlog::info("launch: {} exited with {}: the run ended before it was back", p.label,
                     describe_exit(p));
        nlohmann::json fields = exit_fields(p, "none");
        fields["reason"] = "the run ended before it rejoined";
        events_.write(p, "exited", fields);
      } else if (p.scheduled_stop) {  // down until the schedule starts it again
        spdlog::info("launch: schedule: {} stopped ({})", p.label, describe_exit(p));
        events_.write(p, "exited", exit_fields(p, "schedule"));
        p.scheduled_stop = false, p.waiting = true, p.pid = -1;
      } else if (p.group_stop || ((p.restart_pending || p.down) && !stopping_)) {
        // its group restarts or goes down because another of its processes failed
        spdlog::info("launch: {} exited with {} ({} {})", p.label, describe_exit(p), p.group,
                     p.down ? "stays down" : "restarts");
        nlohmann::json fields = exit_fields(p, p.down ? "continue" : "restart");
        fields["reason"] = "its group (" + p.group + ") " + (p.down ? "stays down" : "restarts");
        events_.write(p, "exited", fields);
        p.group_stop = false;
      } else if (p.status == 0 || stopping_ || g_interrupted) {
        // done, or stopped by the launcher (or by the Ctrl-C that the terminal sent it too)
        events_.write(p, "exited", exit_fields(p, "none"));
      } else {
        on_failure(p);
      }
    }
  }

  // sync.on_failure's answer to `p`'s abnormal exit (failure.h), carried out.
  void on_failure(Part& p) {
    Decision d = policy_.on_failure(p, coordinator_done(), coordinator_round());
    nlohmann::json fields = exit_fields(p, action_name(d.kind));
    fields["reason"] = d.reason;
    if (d.kind == Decision::kRestart) fields["delay_s"] = d.delay_s;
    const std::string what = p.label + " exited with " + describe_exit(p);
    if (coordinator_done() && p.came_back && p.member >= 0) {
      // restarted or rescheduled, it was still joining when the coordinator finished the run
      spdlog::info("launch: {} after the coordinator finished the run, before it was back in it",
                   what);
      p.run_ended = true;
      fields["action"] = "none", fields["reason"] = "the run ended before it rejoined";
      events_.write(p, "exited", fields);
      return;
    }
    events_.write(p, "exited", fields);
    const std::string whom = p.group.empty() ? "it" : p.group;
    switch (d.kind) {
      case Decision::kRestart: {
        spdlog::warn("launch: {}; restarting {} in {:g} s ({})", what, whom, d.delay_s, d.reason);
        auto at = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(d.delay_s));
        for (Part* q : group_of(p)) q->restart_pending = true, q->restart_at = at;
        stop_group(p, "restarting " + whom + " after " + what);
        break;
      }
      case Decision::kStop:
        first_failure_ = what;
        spdlog::error("launch: {}; stopping the rest ({})", what, d.reason);
        break;
      case Decision::kGiveUp:
        spdlog::error("launch: {}; giving up on {}: {}", what, whom, d.reason);
        events_.write(p, "given_up", {{"reason", d.reason}});
        leave_down(p);
        break;
      case Decision::kLeaveDown:
        spdlog::warn("launch: {}; leaving {} down ({})", what, whom, d.reason);
        if (coordinator_done())  // the run is complete, but the failure is still reported
          late_failure_ = what + " after the coordinator finished the run";
        else
          leave_down(p);
        break;
    }
  }

  // Once the coordinator has finished the run, a member started again midway that is still
  // running 15 s later is still trying to join a run that is over: SIGTERM, and no failure.
  void stop_late_members() {
    if (!coordinator_done()) return;
    auto now = std::chrono::steady_clock::now();
    if (run_done_at_ == std::chrono::steady_clock::time_point::max()) run_done_at_ = now;
    if (now - run_done_at_ < std::chrono::seconds(15)) return;
    for (auto& p : parts_) {
      if (!p.came_back || p.member < 0 || p.pid <= 0 || p.status >= 0 || p.run_ended) continue;
      spdlog::info("launch: the run is over and {} is not back in it yet; stopping it", p.label);
      ::kill(p.pid, SIGTERM);
      p.run_ended = true;
      events_.write(p, "stopped",
                    {{"signal", SIGTERM}, {"reason", "the run ended before it rejoined"}});
    }
  }

  // `p`'s group (a worker: `p` alone) and every process in it: the other parts that fail,
  // restart and go down with it.
  std::vector<Part*> group_of(Part& p) {
    if (p.group.empty()) return {&p};
    std::vector<Part*> out;
    for (auto& q : parts_)
      if (q.group == p.group) out.push_back(&q);
    return out;
  }

  // SIGTERM to the running processes of `p`'s group (a failed rank's process group is broken);
  // restart_due sends SIGKILL to those still there 10 s later.
  void stop_group(Part& p, const std::string& reason) {
    for (Part* q : group_of(p)) {
      if (q->pid <= 0 || q->status >= 0 || q->group_stop) continue;
      ::kill(q->pid, SIGTERM);
      q->group_stop = true;
      q->kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      events_.write(*q, "stopped", {{"signal", SIGTERM}, {"reason", reason}});
    }
  }

  // `p` (and its group) stays down: the run goes on if enough workers remain (unless it is over
  // already).
  void leave_down(Part& p) {
    for (Part* q : group_of(p)) q->down = true;
    stop_group(p, "leaving " + (p.group.empty() ? p.label : p.group) + " down");
    if (coordinator_done()) return;
    std::set<int> live;  // coordinator members with a process not down (a site counts once)
    for (const auto& q : parts_)
      if (q.member >= 0 && !q.down) live.insert(q.member);
    const int64_t remaining = int64_t(live.size());
    std::string too_few = policy_.too_few_workers(remaining);
    if (too_few.empty()) {
      spdlog::info("launch: the run goes on with {} of {} workers", remaining,
                   config_.sync.workers);
      return;
    }
    first_failure_ = too_few;
    spdlog::error("launch: {}; stopping the rest", too_few);
  }

  // Whether `p`'s group has no process left running; SIGKILL to those the launcher stopped that
  // are still there 10 s after their SIGTERM.
  bool group_ended(Part& p) {
    bool ended = true;
    for (Part* q : group_of(p)) {
      if (q->pid <= 0 || q->status >= 0) continue;
      ended = false;
      if (q->group_stop && std::chrono::steady_clock::now() > q->kill_at) {
        ::kill(q->pid, SIGKILL);
        events_.write(*q, "stopped",
                      {{"signal", SIGKILL}, {"reason", "still running 10 s after SIGTERM"}});
        q->kill_at = std::chrono::steady_clock::time_point::max();
      }
    }
    return ended;
  }

  // Starts again the failed parts whose backoff has passed, a group once all of its processes
  // ended: a worker or a site rejoins (--resume), the coordinator, a trainer and the DDP ranks
  // resume from their newest checkpoint (fresh when there is none yet).
  void restart_due() {
    auto now = std::chrono::steady_clock::now();
    for (auto& p : parts_) {
      if (!p.restart_pending || now < p.restart_at || !group_ended(p)) continue;
      if (schedule_.down_now(p)) {  // the schedule has it down: it waits for its next window
        spdlog::info("launch: schedule: {} stays down (its window closed while it restarted)",
                     p.group.empty() ? p.label : p.group);
        for (Part* q : group_of(p)) {
          q->restart_pending = false, q->waiting = true, q->pid = -1;
          events_.write(*q, "waiting",
                        {{"action", "schedule"}, {"reason", "down by the schedule"}});
        }
        continue;
      }
      for (Part* q : group_of(p)) {  // a group starts again together
        q->restart_pending = false;
        if (!stopping_ && first_failure_.empty() && !g_interrupted) restart(*q);
      }
    }
  }

  void restart(Part& p) {
    resume_part(p);
    p.status = -1, p.signal = 0, p.pending.clear();
    start(p, exe_);
    ++running_, ++p.restarts;
    p.came_back = true;
    bool resume = std::find(p.args.begin(), p.args.end(), "--resume") != p.args.end();
    spdlog::info("launch: restarted {} (pid {}{}, restart {})", p.label, p.pid,
                 resume ? ", --resume" : ", fresh: no checkpoint yet", p.restarts);
    events_.write(p, "restarted",
                  {{"action", resume ? "resume" : "fresh"}, {"attempt", p.restarts}});
  }

  bool restarts_pending() const {
    return std::any_of(parts_.begin(), parts_.end(),
                       [](const Part& p) { return p.restart_pending; });
  }

  // The coordinator ended the run (exited 0); false when there is none.
  bool coordinator_done() const {
    for (const auto& p : parts_)
      if (p.label == "coord") return p.status == 0 && !p.restart_pending;
    return false;
  }

  int64_t coordinator_round() const {
    for (const auto& p : parts_)
      if (p.label == "coord") return last_logged_round(p.run_dir + "/metrics.jsonl");
    return -1;
  }

  void signal_all(int sig, const std::string& reason) {
    for (auto& p : parts_) {
      if (p.pid <= 0 || p.status >= 0) continue;
      ::kill(p.pid, sig);
      events_.write(p, "stopped", {{"signal", sig}, {"reason", reason}});
    }
  }

  // A failure or a signal: SIGTERM to every part, SIGKILL to those still there 10 s later or at
  // a second signal.
  void stop_when_asked() {
    bool failed = !first_failure_.empty();
    if (!stopping_ && (failed || g_interrupted)) {
      if (g_interrupted) spdlog::info("launch: interrupted; stopping every process");
      stopping_ = true;
      for (auto& p : parts_) p.restart_pending = false;
      signal_all(SIGTERM, g_interrupted ? "interrupted" : first_failure_);
      stop_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    bool again = g_interrupted >= 2 && !killed_;
    if (stopping_ && (again || std::chrono::steady_clock::now() > stop_deadline_)) {
      if (again) spdlog::warn("launch: interrupted again; killing every process");
      signal_all(SIGKILL, again ? "interrupted again" : "still running 10 s after SIGTERM");
      stop_deadline_ = std::chrono::steady_clock::time_point::max();
      killed_ = again;
    }
  }

  // SIGUSR1: the coordinator ends the run after the round now open, every process checkpoints at
  // that boundary and exits, and `loco launch --resume` goes on exactly (docs/faults.md).
  void pause_when_asked() {
    if (!g_pause || paused_) return;
    paused_ = true;
    for (auto& p : parts_) {
      if (p.label != "coord" || p.pid <= 0 || p.status >= 0) continue;
      spdlog::info(
          "launch: pausing: the run stops at the end of this round; go on with "
          "`loco launch --resume`");
      ::kill(p.pid, SIGUSR1);
      events_.write(p, "paused", {{"signal", SIGUSR1}});
      return;
    }
    spdlog::warn("launch: SIGUSR1 (pause) needs a coordinator: ignored");
  }

  int exit_code() const {
    int worst = 0;
    for (const auto& p : parts_) {
      if (p.waiting) {
        spdlog::info("launch: {} was down at the end (schedule)", p.label);
        continue;
      }
      if (p.run_ended) continue;  // logged at its exit
      spdlog::info("launch: {} {} with {}{}", p.label,
                   p.down ? "was left down after exiting" : "exited", describe_exit(p),
                   p.restarts ? fmt::format(" ({} restarts)", p.restarts) : std::string());
      if (p.status != 0 && !p.down) worst = 1;
    }
    if (g_interrupted) return 130;
    if (!first_failure_.empty()) worst = 1;
    if (worst)
      spdlog::error("launch: failed: {}", !first_failure_.empty()  ? first_failure_
                                          : !late_failure_.empty() ? late_failure_
                                                                   : "a part was stopped");
    return worst;
  }

  std::vector<Part>& parts_;
  ScheduleReplay& schedule_;
  const std::string& exe_;
  const Config& config_;
  EventLog& events_;
  FailurePolicy policy_;
  size_t running_ = 0;
  bool stopping_ = false, killed_ = false, paused_ = false;
  std::chrono::steady_clock::time_point stop_deadline_ =
      std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point run_done_at_ =
      std::chrono::steady_clock::time_point::max();  // when the coordinator was seen done
  std::string first_failure_, late_failure_;
};

}  // namespace

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = on_pause;
  ::sigaction(SIGUSR1, &sa, nullptr);
}

int supervise(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe,
              const Config& config, EventLog& events) {
  return Supervisor(parts, schedule, exe, config, events).run();
}

}  // namespace loco::launcher

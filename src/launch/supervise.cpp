// `loco launch` supervising its processes (supervise.h): fork and exec, the prefixed output of
// each, the wait for their exits, the stop of the rest on a failure or a signal, and the exit code.
#include "supervise.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>

namespace loco::launcher {
namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_signal(int) {
  g_interrupted = 1;
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

void signal_all(std::vector<Part>& parts, int sig) {
  for (auto& p : parts)
    if (p.pid > 0 && p.status < 0) ::kill(p.pid, sig);
}

// One launch's processes from their start to the exit code, a step of the loop per method.
class Supervisor {
 public:
  Supervisor(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe)
      : parts_(parts), schedule_(schedule), exe_(exe) {}

  int run() {
    start_all();
    while (running_ > 0) {
      drain_output();
      reap();
      if (schedule_.active() && !stopping_ && first_failure_.empty() && !g_interrupted)
        running_ += schedule_.step(parts_, exe_);
      stop_when_asked();
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
      p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      --running_;
      if (p.scheduled_stop) {  // down until the schedule starts it again
        spdlog::info("launch: schedule: {} stopped (status {})", p.label, p.status);
        p.scheduled_stop = false, p.waiting = true, p.pid = -1;
        continue;
      }
      if (p.status != 0 && !stopping_) {
        first_failure_ = p.label + " exited with status " + std::to_string(p.status);
        spdlog::error("launch: {}; stopping the rest", first_failure_);
      }
    }
  }

  // A failure or a signal: SIGTERM to every part, SIGKILL to those still there 10 s later.
  void stop_when_asked() {
    bool failed = !first_failure_.empty();
    if (!stopping_ && (failed || g_interrupted)) {
      if (g_interrupted) spdlog::info("launch: interrupted; stopping every process");
      stopping_ = true;
      signal_all(parts_, SIGTERM);
      stop_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    if (stopping_ && std::chrono::steady_clock::now() > stop_deadline_) {
      signal_all(parts_, SIGKILL);
      stop_deadline_ = std::chrono::steady_clock::time_point::max();
    }
  }

  int exit_code() const {
    int worst = 0;
    for (const auto& p : parts_) {
      if (p.waiting) {
        spdlog::info("launch: {} was down at the end (schedule)", p.label);
        continue;
      }
      if (p.status != 0) worst = 1;
      spdlog::info("launch: {} exited with status {}", p.label, p.status);
    }
    if (g_interrupted) return 130;
    if (worst)
      spdlog::error("launch: failed: {}",
                    first_failure_.empty() ? "a part was stopped" : first_failure_);
    return worst;
  }

  std::vector<Part>& parts_;
  ScheduleReplay& schedule_;
  const std::string& exe_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_deadline_ =
      std::chrono::steady_clock::time_point::max();
  std::string first_failure_;
};

}  // namespace

void start(Part& p, const std::string& exe) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("launch: pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("launch: fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the launcher
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    for (const auto& [k, v] : p.env) ::setenv(k.c_str(), v.c_str(), 1);
    if (!p.netns.empty() && !enter_netns(p.netns)) {  // as `ip netns exec` does
      std::perror(("setns " + p.netns).c_str());
      ::_exit(127);
    }
    std::vector<char*> argv = {const_cast<char*>(exe.c_str())};
    for (auto& a : p.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    std::perror("exec");
    ::_exit(127);
  }
  ::close(fds[1]);
  p.pid = pid;
  p.fd = fds[0];
}

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int supervise(std::vector<Part>& parts, ScheduleReplay& schedule, const std::string& exe) {
  return Supervisor(parts, schedule, exe).run();
}

}  // namespace loco::launcher

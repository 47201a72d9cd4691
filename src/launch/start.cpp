// One part of a launch started as a child process (supervise.h): fork, its output into a pipe
// the launcher reads, its environment, its network namespace when it has one, and exec.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include "netns.h"
#include "supervise.h"

namespace loco::launcher {

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

}  // namespace loco::launcher

// `loco launch`: start, watch and stop the local processes of an experiment
// (see include/loco/launch.h).
#include "loco/launch.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/coord_client.h"
#include "loco/link.h"
#include "loco/schedule.h"
#include "netns.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

struct Part {
  using Env = std::vector<std::pair<std::string, std::string>>;
  Part(std::string label, std::vector<std::string> args, Env env = {})
      : label(std::move(label)), args(std::move(args)), env(std::move(env)) {}

  std::string label;
  std::vector<std::string> args;  // after the executable
  Env env;
  std::string run_dir;  // its run.dir (a DDP rank r > 0's rank-r/ links its checkpoints)
  pid_t pid = -1;
  int fd = -1;                  // read end of its stdout+stderr
  std::string pending;          // a partial line
  int status = -1;              // exit code once it ended
  int member = -1;              // the coordinator member it belongs to (a worker, a site); -1: none
  std::string netns;            // the network namespace it runs in (sync.link shaped by netns)
  bool waiting = false;         // down by the schedule (sync.schedule), to be started later
  bool scheduled_stop = false;  // the schedule stopped it: its exit is no failure
};

volatile sig_atomic_t g_interrupted = 0;
void on_signal(int) {
  g_interrupted = 1;
}

std::string self_exe() {
  return fs::read_symlink("/proc/self/exe").string();
}

std::vector<std::string> common_args(const std::string& command, const LaunchOptions& o) {
  std::vector<std::string> args = {command, "--config", o.config_path};
  for (const auto& s : o.overrides) args.insert(args.end(), {"--set", s});
  return args;
}

Part coordinator_part(const Config& config, const LaunchOptions& o) {
  auto coord = common_args("coordinator", o);
  coord.insert(coord.end(), {"--set", "run.dir=" + config.run.dir + "/coordinator"});
  Part p("coord", coord);
  p.run_dir = config.run.dir + "/coordinator";
  return p;
}

// Multi-site (docs/multisite.md): the coordinator (unless there is one site: plain DDP) and every
// rank of every site, labelled SITE/RANK; each site of more than one rank rendezvouses on a port
// of its own.
void plan_sites(const Config& config, const LaunchOptions& o, std::vector<Part>& parts) {
  const auto& sites = config.sync.sites;
  const bool between = sites.size() > 1;
  if (between) parts.push_back(coordinator_part(config, o));
  std::set<int> ports;
  for (size_t k = 0; k < sites.size(); ++k) {
    const SiteConfig& site = sites[k];
    int port = free_port();
    while (!ports.insert(port).second) port = free_port();
    const std::string site_dir =
        between ? config.run.dir + "/worker-" + std::to_string(k) : config.run.dir;
    for (int64_t r = 0; r < site.ranks; ++r) {
      auto args = common_args("worker", o);
      if (between)
        args.insert(args.end(), {"--set", "run.dir=" + site_dir, "--coordinator",
                                 config.sync.coordinator.address});
      args.insert(args.end(), {"--site", site.name});
      std::vector<std::pair<std::string, std::string>> env;
      if (site.ranks > 1) {
        std::string rank = std::to_string(r), world = std::to_string(site.ranks);
        env = {{"RANK", rank},
               {"WORLD_SIZE", world},
               {"LOCAL_RANK", rank},
               {"LOCAL_WORLD_SIZE", world},
               {"MASTER_ADDR", "127.0.0.1"},
               {"MASTER_PORT", std::to_string(port)}};
      }
      parts.push_back({site.name + "/" + std::to_string(r), args, env});
      parts.back().member = int(k);
      parts.back().run_dir = site_dir;
    }
  }
}

std::vector<Part> plan(const Config& config, const LaunchOptions& o) {
  std::vector<Part> parts;
  const std::string dir = config.run.dir;
  const int64_t workers = config.sync.workers;
  if (!config.sync.sites.empty()) {
    plan_sites(config, o, parts);
  } else if (config.sync.mode == Mode::kSingle) {
    parts.push_back({"train", common_args("train", o), {}});
    parts.back().run_dir = dir;
  } else if (coordinated(config.sync.mode)) {
    parts.push_back(coordinator_part(config, o));
    for (int64_t k = 0; k < workers; ++k) {
      auto w = common_args("worker", o);
      w.insert(w.end(),
               {"--set", "run.dir=" + dir + "/worker-" + std::to_string(k), "--coordinator",
                config.sync.coordinator.address, "--name", "w" + std::to_string(k)});
      parts.push_back({"w" + std::to_string(k), w, {}});
      parts.back().member = int(k);
      parts.back().run_dir = dir + "/worker-" + std::to_string(k);
    }
  } else if (config.sync.mode == Mode::kDdp) {
    std::string port = std::to_string(free_port());
    for (int64_t k = 0; k < workers; ++k) {
      std::string r = std::to_string(k), w = std::to_string(workers);
      parts.push_back({"r" + r,
                       common_args("train", o),
                       {{"RANK", r},
                        {"WORLD_SIZE", w},
                        {"LOCAL_RANK", r},
                        {"LOCAL_WORLD_SIZE", w},
                        {"MASTER_ADDR", "127.0.0.1"},
                        {"MASTER_PORT", port}}});
      parts.back().run_dir = dir;
    }
  } else {
    throw ConfigError("sync.mode: '" + std::string(mode_name(config.sync.mode)) +
                      "' cannot be launched yet");
  }
  return parts;
}

// Nothing of an earlier run may be touched: every part's run.dir is checked before any process
// starts (run_dir.h), so a refused launch leaves config.yaml, metrics.jsonl and summary.json as
// they were.
void refuse_used_run_dirs(const std::vector<Part>& parts) {
  for (const auto& p : parts) {
    if (list_checkpoints(p.run_dir + "/checkpoints").empty()) continue;
    throw ConfigError("run.dir " + p.run_dir + " (" + p.label +
                      ") already holds checkpoints of an earlier run; `loco launch` starts new "
                      "runs only: choose another run.dir (--set run.dir=...), or continue that "
                      "run with `loco coordinator --resume` / `loco train --resume`");
  }
}

std::string quoted(const std::string& s) {
  if (s.find_first_of(" '\"$\\") == std::string::npos) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string command_line(const Part& p) {
  std::string line;
  for (const auto& [k, v] : p.env) line += k + "=" + quoted(v) + " ";
  line += "loco";
  for (const auto& a : p.args) line += " " + quoted(a);
  return line;
}

void print_dry_run(const Config& config, const std::vector<Part>& parts) {
  std::cout << "# " << parts.size() << " processes for sync.mode " << mode_name(config.sync.mode);
  if (!config.sync.sites.empty())
    std::cout << " between " << config.sync.sites.size() << " site(s)";
  std::cout << "\n";
  if (config.sync.sites.size() == 1) {
    std::cout << "# One site is plain DDP, with no coordinator. Across hosts: MASTER_ADDR is the "
                 "host of the site's rank 0; each host sets its own RANK (and LOCAL_RANK).\n";
  } else if (!config.sync.sites.empty()) {
    std::cout << "# Across hosts: run the coordinator on a host that every site's rank 0 can reach "
                 "and pass --coordinator HOST:PORT to every rank. Inside a site, MASTER_ADDR is "
                 "the host of the site's rank 0 and MASTER_PORT a free port there; each host sets "
                 "its own RANK (and LOCAL_RANK). Sites talk only to the coordinator.\n";
  } else if (coordinated(config.sync.mode)) {
    std::cout << "# Across hosts: run the coordinator on a host the workers can reach, set "
                 "sync.coordinator.address to HOST:PORT there and pass --coordinator HOST:PORT "
                 "to every worker.\n";
  } else if (config.sync.mode == Mode::kDdp) {
    std::cout << "# Across hosts: MASTER_ADDR is rank 0's host; each host sets its own RANK "
                 "(and LOCAL_RANK); the same works under torchrun-like launchers, srun or "
                 "Kubernetes.\n";
  }
  for (const auto& p : parts) std::cout << "[" << p.label << "] " << command_line(p) << "\n";
}

// sync.link with real shaping: every member's processes in a namespace of their own, the
// coordinator listening on the bridge. Returns null (and leaves `parts` as planned) when netns
// cannot be used; the caller falls back to the token bucket.
std::unique_ptr<NetnsLink> netns_link(const Config& config, std::vector<Part>& parts) {
  int members = 0;
  for (const auto& p : parts) members = std::max(members, p.member + 1);
  const bool demanded = config.sync.link.shaping == "netns";
  std::string why = netns_unavailable();
  std::unique_ptr<NetnsLink> net;
  if (why.empty()) {
    try {
      net = std::make_unique<NetnsLink>(config.sync.link, members);
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  if (!net) {
    if (demanded)
      throw ConfigError("sync.link.shaping is netns but the namespaces cannot be set up: " + why +
                        " (use auto or token_bucket to shape in loco's transport instead)");
    spdlog::warn(
        "launch: sync.link: no netns shaping ({}); the token bucket in loco's transport "
        "shapes instead",
        why);
    return nullptr;
  }
  const std::string& address = config.sync.coordinator.address;
  const std::string reach = net->host_address() + address.substr(address.rfind(':'));
  for (auto& p : parts) {
    auto coordinator = std::find(p.args.begin(), p.args.end(), "--coordinator");
    if (p.member < 0)  // the coordinator, on the host: listen where the namespaces reach it
      p.args.insert(p.args.end(), {"--set", "sync.coordinator.address=" + reach});
    else if (coordinator != p.args.end() && coordinator + 1 != p.args.end())
      *(coordinator + 1) = reach;
    if (p.member >= 0) p.netns = net->ns_name(p.member);
    p.args.insert(p.args.end(), {"--set", "sync.link.shaping=netns"});
    p.env.emplace_back(kNetemEnv, net->netem() ? "1" : "0");
  }
  spdlog::info("launch: sync.link shaped by netns: {}", net->describe());
  return net;
}

// Decides how sync.link is shaped for this run and tells every part (docs/link.md): netns when
// asked for or possible (auto), else the transport's token bucket; DDP's is modelled.
std::unique_ptr<NetnsLink> shape_link(const Config& config, std::vector<Part>& parts) {
  const LinkConfig& link = config.sync.link;
  if (!link.limited()) return nullptr;
  if (config.sync.mode == Mode::kSingle && config.sync.sites.empty()) {
    spdlog::warn("launch: sync.link has nothing to shape with sync.mode single");
    return nullptr;
  }
  if (config.sync.mode == Mode::kDdp && config.sync.sites.empty()) {
    spdlog::info(
        "launch: sync.link {} Mbit/s, {} ms: modelled per DDP step (2(W-1)/W x bytes at "
        "the rate, 2(W-1) latencies)",
        link.mbps, link.latency_ms);
    return nullptr;
  }
  const bool between_sites = config.sync.sites.size() != 1;
  std::unique_ptr<NetnsLink> net;
  if (between_sites && link.shaping != "token_bucket") net = netns_link(config, parts);
  if (!net) {
    for (auto& p : parts) p.args.insert(p.args.end(), {"--set", "sync.link.shaping=token_bucket"});
    spdlog::info("launch: sync.link {} Mbit/s, {} ms: token bucket in each worker's transport",
                 link.mbps, link.latency_ms);
  }
  return net;
}

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

// sync.schedule: only DiLoCo workers come and go, and the file names only workers of this run.
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

// Replays the schedule: asks the coordinator for its round (at most 5 times a second), stops the
// workers whose window closed (SIGTERM: they leave the coordinator) and starts those whose window
// opened. A worker is not started for the last round: it would join for the round after it.
class ScheduleReplay {
 public:
  ScheduleReplay(const Config& config, Schedule schedule)
      : config_(config),
        schedule_(std::move(schedule)),
        start_(std::chrono::steady_clock::now()),
        total_rounds_(config.train.max_steps / config.sync.inner_steps),
        address_(config.sync.coordinator.address) {}

  // Where the coordinator listens when it is not config's address (netns: on the bridge).
  void reach_at(const std::string& address) { address_ = address; }

  bool active() const { return !schedule_.empty(); }
  bool up_at_start(const Part& p) const { return schedule_.up(p.label, 0, 0); }

  // Returns how many parts it started.
  size_t step(std::vector<Part>& parts, const std::string& exe) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_poll_ < std::chrono::milliseconds(200)) return 0;
    last_poll_ = now;
    try {
      if (!client_)
        client_ = std::make_unique<CoordinatorClient>(address_, config_.sync.coordinator);
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
        spdlog::info("launch: schedule: starting {} (round {}, {:.0f} s)", p.label, round_,
                     elapsed);
        p.waiting = false, p.status = -1, p.pending.clear();
        // It takes part in this run again: its run.dir, checked at launch, holds its own files.
        if (std::find(p.args.begin(), p.args.end(), "--resume") == p.args.end())
          p.args.push_back("--resume");
        start(p, exe);
        ++started;
      } else if (!want && p.pid > 0 && p.status < 0 && !p.scheduled_stop) {
        spdlog::info("launch: schedule: stopping {} (round {}, {:.0f} s)", p.label, round_,
                     elapsed);
        p.scheduled_stop = true;
        ::kill(p.pid, SIGTERM);
      }
    }
    return started;
  }

 private:
  const Config& config_;
  Schedule schedule_;
  std::chrono::steady_clock::time_point start_, last_poll_;
  std::unique_ptr<CoordinatorClient> client_;
  int64_t round_ = 0, total_rounds_;
  std::string address_;
};

void signal_all(std::vector<Part>& parts, int sig) {
  for (auto& p : parts)
    if (p.pid > 0 && p.status < 0) ::kill(p.pid, sig);
}

}  // namespace

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int launch(const LaunchOptions& options) {
  LaunchOptions o = options;
  if (!o.link.empty())
    for (const auto& s : link_overrides(o.link)) o.overrides.push_back(s);
  Config config = load_config(o.config_path);
  for (const auto& s : o.overrides) apply_override(config, s);
  validate(config);
  std::vector<Part> parts = plan(config, o);
  ScheduleReplay schedule(config, load_schedule(config));
  if (o.dry_run) {
    print_dry_run(config, parts);
    if (schedule.active())
      std::cout << "# sync.schedule " << config.sync.schedule
                << ": `loco launch` starts and stops the listed workers as it says\n";
    return 0;
  }
  refuse_used_run_dirs(parts);
  std::string exe = self_exe();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // Namespaces and qdiscs, when netns shapes the link, live until this returns (or throws).
  std::unique_ptr<NetnsLink> net = shape_link(config, parts);
  if (net) {
    const std::string& address = config.sync.coordinator.address;
    schedule.reach_at(net->host_address() + address.substr(address.rfind(':')));
  }
  spdlog::info("launch: {} processes for sync.mode {} into {}", parts.size(),
               mode_name(config.sync.mode), config.run.dir);
  size_t running = 0;
  for (auto& p : parts) {
    if (schedule.active() && !schedule.up_at_start(p)) {
      spdlog::info("launch: schedule: {} starts down", p.label);
      p.waiting = true;
      continue;
    }
    start(p, exe);
    ++running;
  }
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  std::string first_failure;
  while (running > 0) {
    std::vector<pollfd> fds;
    for (auto& p : parts)
      if (p.fd >= 0) fds.push_back({p.fd, POLLIN, 0});
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 200);
    else
      ::usleep(200000);
    for (auto& p : parts) {
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
    for (auto& p : parts) {
      // not started, ended, or its output not drained yet
      if (p.pid < 0 || p.status >= 0 || p.fd >= 0) continue;
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) != p.pid) continue;
      p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      --running;
      if (p.scheduled_stop) {  // down until the schedule starts it again
        spdlog::info("launch: schedule: {} stopped (status {})", p.label, p.status);
        p.scheduled_stop = false, p.waiting = true, p.pid = -1;
        continue;
      }
      if (p.status != 0 && !stopping) {
        first_failure = p.label + " exited with status " + std::to_string(p.status);
        spdlog::error("launch: {}; stopping the rest", first_failure);
      }
    }
    if (schedule.active() && !stopping && first_failure.empty() && !g_interrupted)
      running += schedule.step(parts, exe);
    bool failed = !first_failure.empty();
    if (!stopping && (failed || g_interrupted)) {
      if (g_interrupted) spdlog::info("launch: interrupted; stopping every process");
      stopping = true;
      signal_all(parts, SIGTERM);
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
      signal_all(parts, SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
  }
  int worst = 0;
  for (const auto& p : parts) {
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
                  first_failure.empty() ? "a part was stopped" : first_failure);
  return worst;
}

}  // namespace loco

// `loco launch`: start, watch and stop the local processes of an experiment
// (see include/loco/launch.h).
// The steps in order: resolve the config, plan the parts (plan.h), print them (--dry-run) or
// check their run.dirs, shape sync.link, then run and supervise them (supervise.h).
#include "loco/launch.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "loco/config.h"
#include "loco/link.h"
#include "loco/precision.h"
#include "events.h"
#include "plan.h"
#include "schedule_replay.h"
#include "supervise.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

std::string self_exe() {
  return fs::read_symlink("/proc/self/exe").string();
}

// The config file with --set's, then --link's and --on-failure's overrides (added to o.overrides,
// which every part is given), validated.
Config resolve_config(LaunchOptions& o) {
  if (!o.link.empty())
    for (const auto& s : link_overrides(o.link)) o.overrides.push_back(s);
  if (!o.on_failure.empty()) o.overrides.push_back("sync.on_failure=" + o.on_failure);
  Config config = loco::resolve_config(o.config_path, o.overrides);
  validate(config);
  // bf16 on a CPU without it fails here, before any part starts (a CUDA device is checked by
  // each worker: the launcher keeps no CUDA context).
  if (config.train.device == "cpu") check_precision(config.train.precision, torch::kCPU);
  return config;
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
  Config config = resolve_config(o);
  std::vector<launcher::Part> parts = launcher::plan(config, o);
  launcher::ScheduleReplay schedule(config, launcher::load_schedule(config));
  if (o.resume && !o.emit_dir.empty())
    throw ConfigError("--resume and --emit: the emitted scripts take --resume themselves");
  if (o.resume) launcher::continue_run(config, parts);
  if (o.dry_run) launcher::print_dry_run(std::cout, config, parts, schedule.active());
  if (!o.emit_dir.empty()) launcher::emit_scripts(config, parts, o, schedule.active());
  if (o.dry_run || !o.emit_dir.empty()) return 0;
  if (!o.resume) launcher::refuse_used_run_dirs(parts);
  std::string exe = self_exe();
  launcher::catch_stop_signals();
  // Namespaces and qdiscs, when netns shapes the link, live until this returns (or throws).
  std::unique_ptr<NetnsLink> net = launcher::shape_link(config, parts);
  if (net) {
    const std::string& address = config.sync.coordinator.address;
    schedule.reach_at(net->host_address() + address.substr(address.rfind(':')));
  }
  spdlog::info("launch: {} processes for sync.mode {} {} {} (sync.on_failure {})", parts.size(),
               mode_name(config.sync.mode), o.resume ? "continuing the run in" : "into",
               config.run.dir, config.sync.on_failure);
  spdlog::info("method: {}", describe_method(config));
  fs::create_directories(config.run.dir);
  const bool coordinator = parts.front().label == "coord";
  launcher::EventLog events(config.run.dir + "/launch_events.jsonl",
                            coordinator ? parts.front().run_dir + "/metrics.jsonl" : "", o.resume);
  schedule.log_to(&events);
  return launcher::supervise(parts, schedule, exe, config, events);
}

}  // namespace loco

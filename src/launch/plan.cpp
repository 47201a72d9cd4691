// `loco launch`'s plan: which processes a run has (a trainer, DDP ranks, a coordinator and its
// workers, or the ranks of every site), with their arguments, environment and run.dir; and the
// check, before any starts, that none of their run.dirs holds an earlier run (or, with --resume,
// that there is a run to continue).
#include "plan.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "failure.h"
#include "loco/checkpoint.h"

namespace loco::launcher {
namespace fs = std::filesystem;
namespace {

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
      parts.back().site = site.name;
      parts.back().group = between ? "site " + site.name : "run";
      parts.back().run_dir = site_dir;
    }
  }
}

}  // namespace

std::vector<Part> plan(const Config& config, const LaunchOptions& o) {
  std::vector<Part> parts;
  const std::string dir = config.run.dir;
  const int64_t workers = config.sync.workers;
  if (!config.sync.sites.empty()) {
    plan_sites(config, o, parts);
  } else if (config.sync.mode == Mode::kSingle) {
    parts.push_back({"train", common_args("train", o), {}});
    parts.back().run_dir = dir;
    parts.back().site = "train";
    parts.back().group = "run";
  } else if (coordinated(config.sync.mode)) {
    parts.push_back(coordinator_part(config, o));
    for (int64_t k = 0; k < workers; ++k) {
      auto w = common_args("worker", o);
      w.insert(w.end(),
               {"--set", "run.dir=" + dir + "/worker-" + std::to_string(k), "--coordinator",
                config.sync.coordinator.address, "--name", "w" + std::to_string(k)});
      parts.push_back({"w" + std::to_string(k), w, {}});
      parts.back().member = int(k);
      parts.back().site = "w" + std::to_string(k);
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
      parts.back().site = "ddp";
      parts.back().group = "run";
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
                      ") already holds checkpoints of an earlier run: continue that run with "
                      "`loco launch --resume`, or choose another run.dir (--set run.dir=...)");
  }
}

void continue_run(const Config& config, std::vector<Part>& parts) {
  const std::string& dir = config.run.dir;
  if (!fs::exists(fs::path(dir) / "launch_events.jsonl"))
    throw ConfigError("--resume: no launch ran in run.dir " + dir +
                      " (no launch_events.jsonl); start it without --resume");
  if (!config.sync.schedule.empty())
    throw ConfigError("--resume with sync.schedule (" + config.sync.schedule +
                      "): a schedule replays from its start, not from where the run stopped; "
                      "start a new run.dir");
  // The summary of the process that owns the run: the coordinator's, a trainer's or rank 0's.
  const fs::path summary = fs::path(parts.front().run_dir) / "summary.json";
  if (fs::exists(summary)) {
    std::ifstream in(summary);
    auto s = nlohmann::json::parse(in, nullptr, false);
    if (s.is_object() && s.value("complete", false))
      throw ConfigError("--resume: the run in " + dir + " finished (" + summary.string() +
                        " says complete); nothing to continue");
  }
  for (auto& p : parts) resume_part(p);
}

}  // namespace loco::launcher

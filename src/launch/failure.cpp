// The failure policy of `loco launch` (failure.h): restart with backoff and a limit within a
// window, leave down, give up, or stop, by the kind of process and sync.on_failure.
#include "failure.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <spdlog/spdlog.h>

#include "loco/checkpoint.h"

namespace fs = std::filesystem;

namespace loco::launcher {
namespace {

constexpr double kFirstBackoffS = 1.0, kMaxBackoffS = 30.0;

bool has_flag(const std::vector<std::string>& args, const std::string& flag) {
  return std::find(args.begin(), args.end(), flag) != args.end();
}

}  // namespace

const char* action_name(Decision::Kind kind) {
  switch (kind) {
    case Decision::kRestart:
      return "restart";
    case Decision::kLeaveDown:
      return "continue";
    case Decision::kGiveUp:
      return "give_up";
    case Decision::kStop:
      return "stop";
  }
  return "stop";
}

FailurePolicy::FailurePolicy(const Config& config)
    : config_(config), total_rounds_(config.train.max_steps / round_steps(config.sync)) {
  // Elastic rounds end at the token budget, not at a round known here: no round is the last.
  if (elastic_rounds(config.sync)) total_rounds_ = std::numeric_limits<int64_t>::max();
}

Decision FailurePolicy::on_failure(const Part& p, bool coordinator_done, int64_t round) {
  const std::string& policy = config_.sync.on_failure;
  if (policy == "stop") return {Decision::kStop, 0, 0, "sync.on_failure is stop"};
  if (p.group == "run") {  // a trainer or the DDP ranks: all of them again, from the checkpoint
    if (policy == "continue")
      return {Decision::kStop, 0, 0,
              "a DDP run cannot go on without one of its ranks (sync.on_failure continue means "
              "stop here)"};
    Decision d = restart_or_give_up(p);
    if (d.kind == Decision::kGiveUp) d.kind = Decision::kStop;  // no run without it
    return d;
  }
  if (p.label == "coord") {
    if (policy == "continue")
      return {Decision::kStop, 0, 0, "the run cannot go on without its coordinator"};
    Decision d = restart_or_give_up(p);
    if (d.kind == Decision::kGiveUp) d.kind = Decision::kStop;  // no run without it
    return d;
  }
  // a worker, or a site (restarted or left down as a whole)
  if (coordinator_done) return {Decision::kLeaveDown, 0, 0, "the coordinator finished the run"};
  if (round >= 0 && round + 1 >= total_rounds_)
    return {Decision::kLeaveDown, 0, 0, "the last round is under way: a restart would miss it"};
  if (policy == "continue") return {Decision::kLeaveDown, 0, 0, "sync.on_failure is continue"};
  return restart_or_give_up(p);
}

Decision FailurePolicy::restart_or_give_up(const Part& p) {
  auto now = std::chrono::steady_clock::now();
  auto& times = failures_[p.group.empty() ? p.label : p.group];
  times.push_back(now);
  const auto span = std::chrono::duration<double>(config_.sync.restart_window_s);
  while (!times.empty() && now - times.front() > span) times.pop_front();
  const int failures = int(times.size());
  const std::string window =
      fmt::format("sync.restart_window_s {:g} s", config_.sync.restart_window_s);
  const std::string limit = "sync.restart_limit " + std::to_string(config_.sync.restart_limit);
  if (failures > config_.sync.restart_limit)
    return {Decision::kGiveUp, 0, failures,
            "it failed " + std::to_string(failures) + " times, more than " + limit + " within " +
                window};
  double delay = std::min(kMaxBackoffS, kFirstBackoffS * std::pow(2.0, failures - 1));
  return {Decision::kRestart, delay, failures,
          "failure " + std::to_string(failures) + " within " + window + "; more than " + limit +
              " gives up"};
}

std::string FailurePolicy::too_few_workers(int64_t remaining) const {
  const int64_t min = config_.sync.coordinator.min_workers;
  if (remaining >= min) return "";
  return "only " + std::to_string(remaining) + " of " + std::to_string(config_.sync.workers) +
         " workers remain, below sync.coordinator.min_workers " + std::to_string(min);
}

void prepare_resume(Part& p) {
  if (has_flag(p.args, "--resume")) return;
  if (!list_checkpoints(p.run_dir + "/checkpoints").empty()) {
    p.args.push_back("--resume");
    return;
  }
  std::error_code ec;
  if (fs::exists(p.run_dir + "/metrics.jsonl"))
    fs::rename(p.run_dir + "/metrics.jsonl", p.run_dir + "/metrics.lost.jsonl", ec);
}

void resume_part(Part& p) {
  if (p.label == "coord" || p.group == "run")
    prepare_resume(p);
  else if (!has_flag(p.args, "--resume"))
    p.args.push_back("--resume");
}

}  // namespace loco::launcher

// What a config means for a run, derived from its keys (declared in config.h): the sync modes
// names, whether a mode has a coordinator, steps per round, whether workers download the update,
// the replica a run reports, elastic rounds, and the token budget.
#include <algorithm>
#include <string>

#include "loco/config.h"

namespace loco {

namespace {
const std::pair<Mode, const char*> kModeNames[] = {{Mode::kSingle, "single"},
                                                   {Mode::kDdp, "ddp"},
                                                   {Mode::kDiloco, "diloco"},
                                                   {Mode::kDemo, "demo"},
                                                   {Mode::kStreaming, "streaming"}};
}  // namespace

const char* mode_name(Mode mode) {
  for (const auto& [m, name] : kModeNames)
    if (m == mode) return name;
  return "?";
}

Mode mode_from_name(const std::string& name) {
  std::string list;
  for (const auto& [m, n] : kModeNames) {
    if (name == n) return m;
    list += (list.empty() ? "" : " | ") + std::string(n);
  }
  throw ConfigError("sync.mode: '" + name + "' is not one of " + list);
}

bool coordinated(Mode mode) {
  return mode == Mode::kDiloco || mode == Mode::kDemo || mode == Mode::kStreaming;
}

int64_t round_steps(const SyncConfig& sync) {
  if (sync.mode != Mode::kStreaming || sync.streaming.fragments < 1) return sync.inner_steps;
  return sync.inner_steps / sync.streaming.fragments;
}

bool downloads_update(const SyncConfig& sync) {
  return sync.mode == Mode::kDemo || sync.mode == Mode::kStreaming || sync.overlap == "delayed" ||
         sync.download == "update" || (sync.download == "auto" && sync.codec.type != "none");
}

std::string report_replica(const SyncConfig& sync) {
  const std::string& v = sync.report_model;
  if (v == "consensus" || v == "best") return "";
  const std::string prefix = "replica:";
  const int64_t replicas = sync.sites.empty() ? sync.workers : int64_t(sync.sites.size());
  const std::string n = v.rfind(prefix, 0) == 0 ? v.substr(prefix.size()) : "";
  if (n.empty() || n.size() > 9 || !std::all_of(n.begin(), n.end(), ::isdigit))
    throw ConfigError("sync.report_model: '" + v + "' is not one of replica:N | consensus | best");
  const int64_t k = std::stoll(n);
  if (k >= replicas)
    throw ConfigError("sync.report_model: " + v + " names no replica (there are " +
                      std::to_string(replicas) +
                      ", replica:0 to replica:" + std::to_string(replicas - 1) + ")");
  return sync.sites.empty() ? "w" + std::to_string(k) : sync.sites[k].name;
}

bool elastic_rounds(const SyncConfig& sync) {
  return sync.lone == "train" || sync.round_seconds > 0;
}

int64_t token_budget(const Config& c) {
  int64_t ranks = 0;
  for (const auto& s : c.sync.sites) ranks += s.ranks;
  if (c.sync.sites.empty()) ranks = c.sync.workers;
  return c.train.max_steps * c.train.batch_size * c.train.grad_accum * c.model.seq_len * ranks;
}

}  // namespace loco

// The JSON form of a coordinator's status (include/loco/status.h): what the status page serves
// as /status.json and `loco status --json` prints.
#include <nlohmann/json.hpp>

#include "loco/status.h"

namespace loco {
namespace {

nlohmann::json curve(const std::vector<LossPoint>& points) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : points) out.push_back({p.round, p.loss});
  return out;
}

}  // namespace

const char* member_doing(const MemberInfo& m) {
  if (m.reported_state) return "pushed state";
  return m.reported ? "pushed" : "training";
}

nlohmann::json status_json(const CoordinatorStatus& s) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : s.members)
    members.push_back({{"worker_id", m.worker_id},
                       {"name", m.name},
                       {"shard", m.shard},
                       {"doing", member_doing(m)},
                       {"last_loss", m.last_loss},
                       {"bytes_up", m.bytes_up},
                       {"bytes_down", m.bytes_down},
                       {"seen_s_ago", m.seen_s_ago}});
  return {{"round", s.round},
          {"total_rounds", s.total_rounds},
          {"mode", s.mode},
          {"wall_s", s.wall_s},
          {"tokens", s.tokens},
          {"bytes_up", s.bytes_up},
          {"bytes_down", s.bytes_down},
          {"last_val_loss", s.val_losses.empty() && s.last_val_loss == 0
                                ? nlohmann::json()
                                : nlohmann::json(s.last_val_loss)},
          {"members", members},
          {"train_losses", curve(s.train_losses)},
          {"val_losses", curve(s.val_losses)}};
}

}  // namespace loco

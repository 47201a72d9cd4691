// The coordinator's members and the round's membership rules (see membership.h).
#include "membership.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "loco/coordinator.h"
#include "loco/progress.h"

namespace loco {

Membership::Membership(int64_t slots, const CoordinatorConfig& config)
    : slots_(slots), config_(config), shard_tokens_(size_t(slots), 0) {
  for (int32_t s = int32_t(slots) - 1; s >= 0; --s) free_shards_.push_back(s);
}

JoinInfo Membership::join(const std::string& name, int32_t want_shard, int64_t round) {
  Member m;
  m.info.name = name;
  // Until a round closes here, everyone starts together in the current round; later joiners
  // take part from the next round (they would come late to this one), unless no member is live:
  // then nobody is in the current round but the newcomer (every site was down by the schedule).
  auto same = name.empty() ? members_.end() : members_.find(name);
  const bool alone = members_.size() == (same == members_.end() ? 0u : 1u);
  m.from_round = closed_here_ == 0 || alone ? round : round + 1;
  int64_t starts = -1;  // the round whose state it pulls first (from_round unless set below)
  if (same != members_.end()) {
    // The same worker again (it restarted before its lease lapsed): the new session replaces
    // the old one and keeps its shard. A push the old one made this round stays counted.
    spdlog::warn("coordinator: {} joined again; its previous session is dropped", name);
    m.info.shard = same->second.info.shard;
    if (same->second.info.reported) {  // it counts as reported; its next round is the next one
      m.info.reported = true;
      m.round_tokens = same->second.round_tokens;
      m.from_round = same->second.from_round;
      starts = round + 1;
    }
    members_.erase(same);
  } else {
    if (free_shards_.empty())
      throw CoordError(CoordError::kResourceExhausted,
                       "all " + std::to_string(slots_) + " worker slots are taken");
    auto wanted = std::find(free_shards_.begin(), free_shards_.end(), want_shard);
    if (wanted == free_shards_.end()) wanted = free_shards_.end() - 1;
    m.info.shard = *wanted;
    free_shards_.erase(wanted);
  }
  // The worker's own name is its id (`loco launch` names them w0, w1, ...); unnamed: a number.
  m.info.worker_id = name.empty() ? "#" + std::to_string(next_id_++) : name;
  m.last_seen = now_s();
  members_[m.info.worker_id] = m;
  if (starts < 0) starts = m.from_round;
  spdlog::info("coordinator: {} joined as {} (shard {}) for round {}, {} live", name,
               m.info.worker_id, m.info.shard, starts, members_.size());
  JoinInfo info{m.info.worker_id, starts, m.info.shard, int32_t(slots_)};
  info.cursor_tokens = shard_tokens_[size_t(m.info.shard)];
  return info;
}

bool Membership::leave(const std::string& id) {
  auto it = members_.find(id);
  if (it == members_.end()) return false;
  spdlog::info("coordinator: {} left", id);
  free_shards_.push_back(it->second.info.shard);
  members_.erase(it);
  return true;
}

Member& Membership::touch(const std::string& id) {
  auto it = members_.find(id);
  if (it == members_.end())
    throw CoordError(CoordError::kNotFound, "unknown worker '" + id + "' (join first)");
  it->second.last_seen = now_s();
  return it->second;
}

const Member* Membership::find(const std::string& id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second;
}

void Membership::expire(double now) {
  for (auto it = members_.begin(); it != members_.end();) {
    if (now - it->second.last_seen > config_.lease_s) {
      spdlog::warn("coordinator: {} missed its lease ({} s without a heartbeat); dropped",
                   it->first, config_.lease_s);
      free_shards_.push_back(it->second.info.shard);
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
}

void Membership::reported(Member& m, int64_t tokens, double now) {
  m.info.reported = true;
  m.round_tokens = tokens;
  last_report_ = now;
  if (first_report_ < 0) first_report_ = now;
}

int Membership::reports() const {
  int n = 0;
  for (const auto& [id, m] : members_) n += m.info.reported;
  return n;
}

bool Membership::round_complete(int64_t round) const {
  int taking_part = 0;
  for (const auto& [id, m] : members_) taking_part += m.from_round <= round;
  return all_reported(round) && (closed_here_ > 0 || taking_part >= slots_);
}

bool Membership::all_reported(int64_t round) const {
  int taking_part = 0, reported = 0;
  for (const auto& [id, m] : members_)
    if (m.from_round <= round) ++taking_part, reported += m.info.reported;
  return reported > 0 && reported == taking_part;
}

bool Membership::deadline_passed(double now) const {
  return first_report_ >= 0 && now - first_report_ > straggler_deadline() &&
         reports() >= config_.min_workers;
}

double Membership::straggler_deadline() const {
  if (config_.straggler != "adaptive" || spreads_.empty()) return config_.round_timeout_s;
  std::vector<double> sorted(spreads_.begin(), spreads_.end());
  std::nth_element(sorted.begin(), sorted.begin() + long(sorted.size() / 2), sorted.end());
  double median = sorted[sorted.size() / 2];
  return std::min(config_.round_timeout_s,
                  std::max(config_.straggler_min_s, config_.straggler_factor * median));
}

std::vector<std::string> Membership::close_round(bool complete) {
  if (complete) {  // everyone taking part reported: how far apart they arrived
    spreads_.push_back(last_report_ - first_report_);
    if (spreads_.size() > 8) spreads_.pop_front();
  }
  std::vector<std::string> reporters;
  for (auto& [id, m] : members_) {
    if (m.info.reported) {
      reporters.push_back(id);
      shard_tokens_[size_t(m.info.shard)] += m.round_tokens;
    }
    m.info.reported = false, m.round_tokens = 0;
  }
  first_report_ = -1;
  ++closed_here_;
  return reporters;
}

torch::Tensor Membership::shard_tokens() const {
  return torch::tensor(shard_tokens_, torch::kInt64);
}

void Membership::restore_shard_tokens(const torch::Tensor& tokens) {
  if (tokens.numel() != slots_) return;  // a checkpoint of another worker count: start over
  for (int64_t i = 0; i < slots_; ++i) shard_tokens_[size_t(i)] = tokens[i].item<int64_t>();
}

}  // namespace loco

// The coordinator's members and the round's membership rules, free of networking and of any sync
// method: joins (names, shards, the round a newcomer takes part from), leases, who reported this
// round, the data shards' cursors, and the straggler deadline. Not thread-safe: CoordinatorCore
// calls it under its lock. Rules (docs/faults.md):
// - A member takes part from the round it joined for. Until the first round closes in this
//   process (a fresh start, or a restart from a checkpoint), or when no member is live, that is
//   the current round; afterwards it is the next one, whose state it pulls once the current one
//   closes.
// - A join under a live member's name replaces that member (the worker restarted) and keeps its
//   shard; a push the old session made this round stays counted.
// - A round is complete when every member taking part has reported (in the first round of a
//   process: and at least `slots` of them). Otherwise it closes once the straggler deadline has
//   passed since its first report with at least min_workers reports: sync.coordinator.straggler
//   fixed (round_timeout_s) or adaptive (straggler_factor x the median first-to-last spread of the
//   last 8 complete rounds, within [straggler_min_s, round_timeout_s]).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "loco/config.h"
#include "loco/protocol.h"

namespace loco {

struct Member {
  MemberInfo info;
  double last_seen = 0;
  int64_t from_round = 0;    // the first round it takes part in
  int64_t round_tokens = 0;  // its push's tokens this round
  bool pulled = false;       // its first pull (the starting state) is counted as setup
};

class Membership {
 public:
  // `slots`: sync.workers, the number of data shards and of members at once.
  Membership(int64_t slots, const CoordinatorConfig& config);

  // Admits `name` (empty: a numbered id) for the current `round`. `want_shard` >= 0: a rejoining
  // worker asks for the shard it reads. Throws CoordError (kResourceExhausted: no slot free).
  JoinInfo join(const std::string& name, int32_t want_shard, int64_t round);
  // Removes a member; false when it was not one.
  bool leave(const std::string& id);
  // The member `id`, its lease renewed; throws CoordError kNotFound.
  Member& touch(const std::string& id);
  const Member* find(const std::string& id) const;
  // Drops the members whose lease lapsed at `now`.
  void expire(double now);

  // A push for `round` was taken from `m`: counts it and when it arrived.
  void reported(Member& m, int64_t tokens, double now);
  int reports() const;
  // Whether every member taking part in `round` has reported (see the rules above).
  bool round_complete(int64_t round) const;
  // Whether every member taking part in `round` has reported, whoever is still to join (no
  // first-round wait for sync.workers members; false when nobody reported).
  bool all_reported(int64_t round) const;
  // Whether the straggler deadline has passed at `now` with enough reports to close without the
  // missing members.
  bool deadline_passed(double now) const;
  double straggler_deadline() const;
  // The round closed: remembers its arrival spread (when complete), moves each reporter's shard
  // cursor on by its tokens, clears the reports. Returns the reporters' ids, in id order.
  std::vector<std::string> close_round(bool complete);
  int64_t rounds_closed() const { return closed_here_; }

  size_t size() const { return members_.size(); }
  bool empty() const { return members_.empty(); }
  const std::map<std::string, Member>& members() const { return members_; }
  std::map<std::string, Member>& members() { return members_; }
  // Per data shard: tokens contributed in closed rounds (checkpointed, restored on a restart).
  torch::Tensor shard_tokens() const;
  void restore_shard_tokens(const torch::Tensor& tokens);

 private:
  int64_t slots_;
  CoordinatorConfig config_;
  std::map<std::string, Member> members_;
  std::vector<int32_t> free_shards_;
  std::vector<int64_t> shard_tokens_;
  int64_t next_id_ = 0, closed_here_ = 0;  // rounds closed by this process (0 after a restart)
  double first_report_ = -1, last_report_ = 0;
  std::deque<double> spreads_;  // first-to-last arrival of recent complete rounds (adaptive)
};

}  // namespace loco

// The coordinator's data assignment (docs/data.md, "Data in a coordinated run"): who reads which
// training windows, so that the live members together read each window of an epoch once, whoever
// leaves or joins. Free of networking; CoordinatorCore calls it under its lock.
//
// Epoch e's windows are visited in the order of the permutation π_e (loader.h); the plan deals in
// positions of that order. A member claims a lease of `want` positions: first the remainder of
// its own previous lease (what it did not read of it), then its seat's reservation (below), then
// ranges from the free list (positions handed out before and given back, oldest epoch first),
// then fresh positions (epoch by epoch: once epoch e's positions are all handed out, epoch
// e + 1's follow). Each claim reports how far the member read its previous lease; what exceeds
// `want` goes back to the free list.
//
// Seats make the fault-free case deterministic (two runs of one config read the same windows on
// the same members in every round, whatever order their claims arrive in): the coordinator names
// each claim's round and the claimant's seat among the run's fixed seats (the sites of
// sync.sites in config order, else the sync.workers slots), with every seat's size (its round of
// windows). At a round's first claim the plan reserves, seat by seat in order, each seat's size
// (from the free list first, then fresh positions); a claim receives its seat's reservation after
// its own unread rest, however the claims are ordered. Reservations not claimed by the first
// claim two rounds later go back to the free list and are dealt out again, seat by seat (a claim
// may name the round it is for, one ahead of a slower member's first claim).
//
// A member that leaves reports how far it read; one that vanishes (its lease lapsed, or a new
// session under its name claims without its lease id) is taken to have read what it last
// reported, and the rest of its lease goes back to the free list. So every position of an epoch
// is handed out once, and once more only where a member that vanished had read past its last
// report. The whole plan is a few integers and ranges: saved as JSON on every
// change (the coordinator's data_plan.json), so a restarted coordinator goes on from it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "loco/data_lease.h"

namespace loco {

// Where a claim sits (see above): the coordinator's round, the claimant's seat (< 0: none; the
// claim then takes from the free list and fresh positions in arrival order), each seat's size.
struct DataSeats {
  int64_t round = 0;
  int64_t seat = -1;
  std::vector<int64_t> sizes;
};

class DataPlan {
 public:
  // A lease of `want` positions for `holder`, which read `consumed` positions of its lease
  // `lease_id` (0: it holds none). `windows`: the windows of an epoch, as the worker's corpus
  // has them (the first claim fixes it). Throws CoordError kInvalidArgument on a corpus of
  // another size, want < 1, or consumed outside what the lease allows. `seats`: see above.
  // `resume` (a worker resuming exactly from its own checkpoint): the unread rest of the lease it
  // held then; when every range of it is on the free list, those ranges are its new lease
  // (whatever `want`), as they are when it is the unread rest of the lease the holder still has
  // (kept by a pause); else the claim goes on as if `resume` were empty.
  DataLease claim(const std::string& holder, int64_t lease_id, int64_t consumed, int64_t want,
                  int64_t windows, const DataSeats& seats = {},
                  const std::vector<LeaseRange>& resume = {});
  // `holder` leaves, having read `consumed` positions of lease `lease_id` (< 0: unknown, taken
  // as its last report). The rest goes back to the free list. Nothing when the lease is not its
  // current one. `keep` (a pause): the read part is counted, the lease stays the holder's, and it
  // waits for the holder with no time limit (a restart from disk gives it the grace below).
  // Returns whether anything changed.
  bool release(const std::string& holder, int64_t lease_id, int64_t consumed, bool keep = false);
  // Releases (at their last report) the leases of holders not in `live`, except those restored
  // from disk less than `grace_s` ago (their members may still come back). Returns whether any was.
  bool sweep(const std::set<std::string>& live, double now);

  nlohmann::json to_json() const;
  // A plan saved by to_json; its leases wait `grace_s` from `now` for their holders to rejoin.
  static DataPlan from_json(const nlohmann::json& j, double now, double grace_s);

  int64_t windows() const { return windows_; }
  int64_t epochs_done() const { return epochs_done_; }
  // Positions handed out, and not given back, in epoch `epoch`; read, in epoch `epoch`.
  int64_t read_in(int64_t epoch) const;
  const std::vector<LeaseRange>& free_list() const { return free_; }
  // Seat `seat`'s reservation for the current round (empty once claimed or when none).
  std::vector<LeaseRange> reserved(int64_t seat) const;
  const DataLease* lease_of(const std::string& holder) const;
  nlohmann::json summary() const;  // for the coordinator's summary.json

 private:
  struct Holding {
    DataLease lease;
    int64_t consumed = 0;     // read, as last reported
    double orphan_until = 0;  // restored from disk: kept for its holder until then
  };
  void count_read(const DataLease& lease, int64_t from, int64_t to);
  void give_back(const std::vector<LeaseRange>& ranges);
  std::vector<LeaseRange> take(int64_t n);
  // Takes exactly `ranges` off the free list if every one lies in it; else changes nothing.
  bool take_exact(const std::vector<LeaseRange>& ranges);
  void reserve(const DataSeats& seats);

  int64_t windows_ = 0;           // per epoch (0 until the first claim)
  int64_t epoch_ = 0, next_ = 0;  // the next fresh position
  int64_t next_id_ = 1;           // lease ids, never reused
  int64_t epochs_done_ = 0;       // epochs whose every position was read
  std::vector<LeaseRange> free_;  // given back, sorted by (epoch, begin)
  std::map<std::string, Holding> held_;
  std::map<int64_t, int64_t> read_;  // per unfinished epoch: positions read
  int64_t reserved_round_ = -1;      // the round of the reservations (-1: none made yet)
  std::map<int64_t, std::vector<LeaseRange>> reserved_;  // per seat, not yet claimed
  int64_t previous_round_ = -1;                          // the round before, and its
  std::map<int64_t, std::vector<LeaseRange>> previous_;  // unclaimed reservations
};

}  // namespace loco

// Tests of the data assignment of coordinated runs (docs/data.md, "Data in a coordinated run"):
// the coordinator's DataPlan (leases, the free list, epoch rollover, a vanished holder, the saved
// plan) and the DataLoader reading a lease (a site's ranks splitting it, the refill, the stop).
// Real processes leaving and rejoining are in test_faults.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "coord/data_plan.h"
#include "loco/coordinator.h"
#include "loco/loader.h"

using namespace loco;

namespace {

using Read = std::pair<int64_t, int64_t>;  // (epoch, position)

// Every (epoch, position) of `lease`'s first `n` entries, added to `seen`; false on a repeat.
bool read_into(std::set<Read>& seen, const DataLease& lease, int64_t n) {
  bool fresh = true;
  for (int64_t k = 0; k < n; ++k) fresh &= seen.insert(lease.at(k)).second;
  return fresh;
}

int64_t count_epoch(const std::set<Read>& seen, int64_t epoch) {
  int64_t n = 0;
  for (const auto& [e, p] : seen) n += e == epoch;
  return n;
}

}  // namespace

TEST(DataPlan, MembersTogetherReadEveryWindowOfAnEpochOnceAndTheNextEpochFollows) {
  DataPlan plan;
  const int64_t windows = 50, want = 7;
  std::map<std::string, DataLease> held;
  std::set<Read> seen;
  for (int round = 0; round < 20; ++round) {  // 3 x 7 x 20 = 420 windows: 8 epochs and more
    for (std::string name : {"a", "b", "c"}) {
      auto& lease = held[name];
      if (lease.id) EXPECT_TRUE(read_into(seen, lease, lease.size())) << "a window read twice";
      lease = plan.claim(name, lease.id, lease.size(), want, windows);
      EXPECT_EQ(lease.size(), want);
    }
  }
  // The leases still held are not read yet: every epoch before the last one read whole.
  EXPECT_EQ(plan.epochs_done(), int64_t(seen.size()) / windows);
  for (int64_t e = 0; e < plan.epochs_done(); ++e) EXPECT_EQ(count_epoch(seen, e), windows);
  EXPECT_GE(plan.epochs_done(), 7);
}

TEST(DataPlan, ALeaverGivesBackWhatItDidNotReadAndTheNextClaimTakesItFirst) {
  DataPlan plan;
  DataLease a = plan.claim("a", 0, 0, 10, 100);
  DataLease b = plan.claim("b", 0, 0, 10, 100);
  EXPECT_EQ(a.ranges, (std::vector<LeaseRange>{{0, 0, 10}}));
  EXPECT_EQ(b.ranges, (std::vector<LeaseRange>{{0, 10, 20}}));
  EXPECT_TRUE(plan.release("a", a.id, 4));  // read 4 of them, then left
  EXPECT_EQ(plan.free_list(), (std::vector<LeaseRange>{{0, 4, 10}}));
  EXPECT_FALSE(plan.release("a", a.id, 4));  // gone already
  // b's next lease: the rest of its own (it read 8), then a's leftovers, then fresh positions.
  DataLease b2 = plan.claim("b", b.id, 8, 10, 100);
  EXPECT_EQ(b2.ranges, (std::vector<LeaseRange>{{0, 18, 20}, {0, 4, 10}, {0, 20, 22}}));
  EXPECT_TRUE(plan.free_list().empty());
  EXPECT_EQ(plan.read_in(0), 4 + 8);
}

TEST(DataPlan, ANewSessionUnderALiveNameAndALapsedHolderGiveBackTheUnreportedRest) {
  DataPlan plan;
  DataLease a = plan.claim("a", 0, 0, 10, 100);
  DataLease a2 = plan.claim("a", a.id, 10, 10, 100);  // read the first lease whole
  EXPECT_EQ(a2.ranges, (std::vector<LeaseRange>{{0, 10, 20}}));
  // A restarted process of "a" holds no lease: the old session's unreported lease goes back,
  // and (first in line) comes straight back to it.
  DataLease again = plan.claim("a", 0, 0, 10, 100);
  EXPECT_EQ(again.ranges, a2.ranges);
  EXPECT_NE(again.id, a2.id);
  // A holder that is no longer a member loses its lease at its last report.
  plan.claim("b", 0, 0, 5, 100);
  EXPECT_FALSE(plan.sweep({"a", "b"}, 0));
  EXPECT_TRUE(plan.sweep({"a"}, 0));
  EXPECT_EQ(plan.free_list(), (std::vector<LeaseRange>{{0, 20, 25}}));
  EXPECT_EQ(plan.lease_of("b"), nullptr);
}

TEST(DataPlan, ASavedPlanGoesOnExactlyAndKeepsLeasesForTheirHoldersUntilTheGraceEnds) {
  DataPlan plan;
  DataLease a = plan.claim("a", 0, 0, 30, 40);
  DataLease b = plan.claim("b", 0, 0, 30, 40);  // crosses into epoch 1
  EXPECT_EQ(b.ranges, (std::vector<LeaseRange>{{0, 30, 40}, {1, 0, 20}}));
  plan.release("a", a.id, 12);
  DataPlan copy = DataPlan::from_json(nlohmann::json::parse(plan.to_json().dump()), 100, 5);
  EXPECT_EQ(copy.to_json(), plan.to_json());
  // Within the grace, b's lease waits for b although b is not a member (yet) ...
  EXPECT_FALSE(copy.sweep({}, 104));
  // ... and b, back, goes on from it exactly as it would have with the original plan.
  DataLease next = copy.claim("b", b.id, 25, 30, 40);
  DataLease expected = plan.claim("b", b.id, 25, 30, 40);
  EXPECT_EQ(next.ranges, expected.ranges);
  EXPECT_EQ(next.id, expected.id);
  // Past the grace, an absent holder's lease goes back.
  DataPlan late = DataPlan::from_json(plan.to_json(), 100, 5);
  EXPECT_TRUE(late.sweep({}, 106));
  EXPECT_EQ(late.lease_of("b"), nullptr);
}

TEST(DataPlan, SeatsGetTheSameRangesWhateverOrderTheirClaimsArriveIn) {
  // Three seats of sizes 6, 3, 3 (a site of two ranks, two of one); three rounds; the claims of
  // each round arrive in another order in each run. In round 1 "b" leaves having read 1 of its 3.
  const std::vector<int64_t> sizes{6, 3, 3};
  const std::vector<std::string> names{"a", "b", "c"};
  auto run = [&](const std::vector<std::vector<int>>& orders) {
    DataPlan plan;
    std::map<std::string, DataLease> held;
    std::vector<std::map<std::string, std::vector<LeaseRange>>> got(orders.size());
    for (size_t round = 0; round < orders.size(); ++round) {
      if (round == 2) plan.release("b", held["b"].id, 1);
      for (int i : orders[round]) {
        if (round == 2 && i == 1) continue;  // b is gone
        auto& lease = held[names[size_t(i)]];
        lease = plan.claim(names[size_t(i)], lease.id, lease.size(), sizes[size_t(i)], 30,
                           {int64_t(round), i, sizes});
        got[round][names[size_t(i)]] = lease.ranges;
      }
    }
    return got;
  };
  auto x = run({{0, 1, 2}, {0, 1, 2}, {0, 2}}), y = run({{2, 1, 0}, {1, 0, 2}, {2, 0}});
  ASSERT_EQ(x.size(), y.size());
  for (size_t round = 0; round < x.size(); ++round) EXPECT_EQ(x[round], y[round]) << round;
  // Each seat's range lies where its place in seat order puts it, not where its claim came.
  EXPECT_EQ(x[0]["a"], (std::vector<LeaseRange>{{0, 0, 6}}));
  EXPECT_EQ(x[0]["c"], (std::vector<LeaseRange>{{0, 9, 12}}));
  EXPECT_EQ(x[1]["b"], (std::vector<LeaseRange>{{0, 18, 21}}));
  // Round 2: b's unread rest (19..21) went back; seat 0 (a) gets it first, then fresh ones.
  EXPECT_EQ(x[2]["a"], (std::vector<LeaseRange>{{0, 19, 21}, {0, 24, 28}}));
  EXPECT_EQ(x[2]["c"], (std::vector<LeaseRange>{{1, 1, 4}}));
}

TEST(DataPlan, ALeaseReadWholeAndAnUnclaimedReservationAreEachHandedOutOnce) {
  // Seats read their leases whole each round, but seat 1 claims only every other round: its
  // unclaimed reservations go back and are dealt out again. No position is handed out twice.
  DataPlan plan;
  const std::vector<int64_t> sizes{4, 4};
  std::map<std::string, DataLease> held;
  std::set<Read> seen;
  for (int64_t round = 0; round < 30; ++round) {
    for (int seat = 0; seat < 2; ++seat) {
      if (seat == 1 && round % 2) continue;
      std::string name = seat ? "b" : "a";
      auto& lease = held[name];
      if (lease.id) EXPECT_TRUE(read_into(seen, lease, lease.size())) << "a window read twice";
      lease = plan.claim(name, lease.id, lease.size(), 4, 25, {round, seat, sizes});
      EXPECT_EQ(lease.size(), 4);
    }
  }
  EXPECT_GE(plan.epochs_done(), 3);
  for (int64_t e = 0; e < plan.epochs_done(); ++e) EXPECT_EQ(count_epoch(seen, e), 25);
  // The reservations are part of the saved plan.
  DataPlan copy = DataPlan::from_json(plan.to_json(), 0, 0);
  EXPECT_EQ(copy.to_json(), plan.to_json());
  EXPECT_EQ(copy.reserved(1), plan.reserved(1));
}

// Pause and exact resume (docs/faults.md): a holder that leaves at a pause keeps its lease (read
// as far as it reported) across the pause and a restart of the plan from disk; resuming, it asks
// for the unread rest back and gets exactly that, before any seat of the next round is dealt, so
// the next round's seats are those of a run without the pause. A rest that is not free (handed
// out meanwhile) is not granted: the claim goes on as any other.
TEST(DataPlan, APausedHoldersLeaseWaitsForItAndItsResumeGetsTheUnreadRestBack) {
  const std::vector<int64_t> sizes{4, 4};
  auto deal = [&](DataPlan& plan, bool pause) {
    DataLease a = plan.claim("a", 0, 0, 4, 40, {0, 0, sizes});
    DataLease b = plan.claim("b", 0, 0, 4, 40, {0, 1, sizes});
    if (pause) {  // both read 1 of 4, leave at the pause, the plan is saved and restored
      EXPECT_TRUE(plan.release("a", a.id, 1, /*keep=*/true));
      EXPECT_TRUE(plan.release("b", b.id, 1, /*keep=*/true));
      EXPECT_FALSE(plan.sweep({}, 1e9));  // kept with no time limit
      plan = DataPlan::from_json(plan.to_json(), 0, 60);
      for (auto* l : {&b, &a}) {  // resumed in the other order
        const std::string who = l == &a ? "a" : "b";
        const auto rest = l->slice(1, 4);
        DataLease back = plan.claim(who, l->id, 1, 3, 40, {0, -1, {}}, rest);
        EXPECT_EQ(back.ranges, rest) << who;
        *l = back;
      }
      a = plan.claim("a", a.id, 3, 4, 40, {1, 0, sizes});
      b = plan.claim("b", b.id, 3, 4, 40, {1, 1, sizes});
    } else {
      a = plan.claim("a", a.id, 4, 4, 40, {1, 0, sizes});
      b = plan.claim("b", b.id, 4, 4, 40, {1, 1, sizes});
    }
    return std::make_pair(a.ranges, b.ranges);
  };
  DataPlan whole, paused;
  EXPECT_EQ(deal(paused, true), deal(whole, false));
  EXPECT_EQ(paused.read_in(0), whole.read_in(0));

  // A rest someone else was dealt meanwhile is not granted.
  DataPlan plan;
  DataLease a = plan.claim("a", 0, 0, 4, 40);
  plan.release("a", a.id, 1);                  // left for good: 1..4 go back to the free list
  DataLease c = plan.claim("c", 0, 0, 2, 40);  // takes 1..3 of them
  EXPECT_EQ(c.ranges, (std::vector<LeaseRange>{{0, 1, 3}}));
  DataLease back = plan.claim("a", a.id, 1, 3, 40, {}, a.slice(1, 4));
  EXPECT_NE(back.ranges, a.slice(1, 4));
  EXPECT_EQ(back.size(), 3);
}

// A streaming worker claims the next round's data at its push, naming that round: it can claim
// round 1's before a slower worker made its first claim (round 0's, at its join). The slower one
// still gets its own round-0 reservation, so the seats are dealt as when the claims come in
// round order.
TEST(DataPlan, AClaimForTheNextRoundLeavesASlowerSeatsReservationOfThisRoundToIt) {
  const std::vector<int64_t> sizes{4, 4};
  auto deal = [&](const std::vector<std::pair<int, int64_t>>& order) {  // (seat, round)
    DataPlan plan;
    std::map<int, DataLease> held;
    std::map<std::pair<int, int64_t>, std::vector<LeaseRange>> got;
    for (auto [seat, round] : order) {
      auto& l = held[seat];
      l = plan.claim(seat ? "b" : "a", l.id, l.size(), 4, 40, {round, seat, sizes});
      got[{seat, round}] = l.ranges;
    }
    return got;
  };
  auto in_order = deal({{0, 0}, {1, 0}, {0, 1}, {1, 1}, {0, 2}, {1, 2}});
  auto ahead = deal({{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {1, 2}});
  EXPECT_EQ(in_order, ahead);
  EXPECT_EQ(ahead[std::make_pair(1, int64_t(0))], (std::vector<LeaseRange>{{0, 4, 8}}));
}

TEST(DataPlan, ClaimsThatDoNotFitAreRefusedWithTheirNumbers) {
  DataPlan plan;
  DataLease a = plan.claim("a", 0, 0, 10, 100);
  try {
    plan.claim("b", 0, 0, 10, 99);
    FAIL() << "a corpus of another size was accepted";
  } catch (const CoordError& e) {
    EXPECT_EQ(e.code, CoordError::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("99 windows"), std::string::npos) << e.what();
  }
  EXPECT_THROW(plan.claim("a", a.id, 11, 10, 100), CoordError);  // more than it was given
  EXPECT_THROW(plan.claim("b", 0, 0, 0, 100), CoordError);
}

TEST(DataLoaderLease, ASitesRanksSplitEachStepOfTheLeaseLikeDdpRanks) {
  auto tokens = torch::arange(0, 32 * 40 + 1, torch::kInt64);  // 40 windows of seq_len 32
  const int64_t batch = 2, seq = 32;
  DataLoader whole(tokens, batch, seq, 7, 0, 1), r0(tokens, batch, seq, 7),
      r1(tokens, batch, seq, 7);
  EXPECT_EQ(whole.total_windows(), 40);
  DataLease lease{3, {{0, 0, 8}}};
  // Two ranks of a site, read as DDP ranks 0 and 1 of 2 read the epoch's first 8 positions.
  DataLoader d0(tokens, batch, seq, 7, 0, 2), d1(tokens, batch, seq, 7, 1, 2);
  r0.set_lease(lease, 0, 0, 2);
  r1.set_lease(lease, 0, 1, 2);
  for (int step = 0; step < 2; ++step) {
    EXPECT_TRUE(torch::equal(r0.next().input, d0.next().input));
    EXPECT_TRUE(torch::equal(r1.next().input, d1.next().input));
  }
  EXPECT_EQ(r0.lease_offset(), 8);
  EXPECT_THROW(r0.next(), std::runtime_error);  // used up, no refill hook
  // With a hook, the loader claims the next lease when the step needs it.
  int refills = 0;
  r0.set_refill([&](DataLoader& l) {
    ++refills;
    l.set_lease({4, {{1, 0, 4}}}, 0, 0, 2);
  });
  r0.next();
  EXPECT_EQ(refills, 1);
  EXPECT_EQ(r0.lease().id, 4);
  EXPECT_EQ(r0.stop_reading(), (std::pair<int64_t, int64_t>{4, 4}));
}

TEST(DataLoaderLease, OneWorkersLeaseReadsWhatSingleTrainingReads) {
  auto tokens = torch::arange(0, 32 * 30 + 1, torch::kInt64);
  DataLoader single(tokens, 4, 32, 5), leased(tokens, 4, 32, 5);
  leased.set_lease({1, {{0, 0, 30}, {1, 0, 10}}}, 0, 0, 1);  // across the epoch's end
  for (int step = 0; step < 10; ++step)
    EXPECT_TRUE(torch::equal(single.next().input, leased.next().input)) << "step " << step;
}

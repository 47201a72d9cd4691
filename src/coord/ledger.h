// The coordinator's ledger of bytes: every byte a member sends or receives, as serialized on the
// wire, by purpose, per round and for the run; and, beside them, what fp32 DiLoCo and DDP would
// have sent for the same rounds, by include/loco/bytes.h's formulas: summary.json carries its
// summary() and `loco compare` and the scripts read them from there.
// Not thread-safe: CoordinatorCore calls it under its lock.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

namespace loco {

// What a transfer was for. kRound: the method's own per-round traffic (pushes, per-round
// downloads, a resync's pull), counted in the round's up/down; kResync: a resync's full
// parameters, the method's traffic but outside the round's counts; kConsensus: the decoupled
// method's replica average for evaluation and export (its own column); kSetup: a member's first
// pull of the state, which any method needs to start.
enum class Purpose { kRound, kResync, kConsensus, kSetup };

// Run totals so far, as a closed round's metrics record carries them.
struct LedgerTotals {
  uint64_t method = 0, consensus = 0, setup = 0;
  double fp32_diloco = 0, ddp = 0;
};

class ByteLedger {
 public:
  // `num_params`: the model's; `workers`: sync.workers (DDP's ring size); `inner_steps`: the
  // steps of a round; `rounds_per_sync`: the rounds in which fp32 DiLoCo sends the whole model
  // once (streaming DiLoCo: its fragments; otherwise 1).
  ByteLedger(int64_t num_params, int64_t workers, int64_t inner_steps, int64_t rounds_per_sync = 1);

  void up(uint64_t bytes, Purpose purpose);
  void down(uint64_t bytes, Purpose purpose);
  // A round closed with `reporters` pushes: adds what fp32 DiLoCo (every reporter's full Δ up and
  // θ down, a rounds_per_sync-th of it a round) and DDP (H ring all-reduces of 4N bytes, each way,
  // over all ranks) would have moved, and starts the next round's counts. Returns this round's {up,
  // down}.
  std::pair<uint64_t, uint64_t> close_round(int64_t reporters);

  LedgerTotals totals() const;
  uint64_t bytes_up() const { return up_; }
  uint64_t bytes_down() const { return down_; }
  // The summary's byte fields: bytes_up, bytes_down, bytes_total (the method's), consensus and
  // setup totals, fp32_diloco_bytes, ddp_bytes and the method's ratios against both.
  nlohmann::json summary() const;

 private:
  void count(uint64_t bytes, Purpose purpose, uint64_t& round);
  int64_t num_params_, workers_, inner_steps_, rounds_per_sync_;
  uint64_t up_ = 0, down_ = 0, round_up_ = 0, round_down_ = 0;
  LedgerTotals totals_;
};

}  // namespace loco

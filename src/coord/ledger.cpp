// The coordinator's ledger of bytes (see ledger.h).
#include "ledger.h"

#include <algorithm>

#include "loco/bytes.h"

namespace loco {

ByteLedger::ByteLedger(int64_t num_params, int64_t workers, int64_t inner_steps,
                       int64_t rounds_per_sync)
    : num_params_(num_params),
      workers_(workers),
      inner_steps_(inner_steps),
      rounds_per_sync_(rounds_per_sync) {}

void ByteLedger::count(uint64_t bytes, Purpose purpose, uint64_t& round) {
  switch (purpose) {
    case Purpose::kRound:
      round += bytes;
      totals_.method += bytes;
      break;
    case Purpose::kResync:
      totals_.method += bytes;
      break;
    case Purpose::kConsensus:
      totals_.consensus += bytes;
      break;
    case Purpose::kSetup:
      totals_.setup += bytes;
      break;
  }
}

void ByteLedger::up(uint64_t bytes, Purpose purpose) {
  up_ += bytes;
  count(bytes, purpose, round_up_);
}

void ByteLedger::down(uint64_t bytes, Purpose purpose) {
  down_ += bytes;
  count(bytes, purpose, round_down_);
}

std::pair<uint64_t, uint64_t> ByteLedger::close_round(int64_t reporters) {
  totals_.fp32_diloco += fp32_diloco_round_bytes(num_params_, reporters) / double(rounds_per_sync_);
  totals_.ddp += double(inner_steps_) * ddp_step_bytes(num_params_, workers_);
  std::pair<uint64_t, uint64_t> round{round_up_, round_down_};
  round_up_ = round_down_ = 0;
  return round;
}

LedgerTotals ByteLedger::totals() const {
  return totals_;
}

nlohmann::json ByteLedger::summary() const {
  const double method = double(std::max<uint64_t>(totals_.method, 1));
  return {{"bytes_up", up_},
          {"bytes_down", down_},
          {"bytes_total", totals_.method},
          {"consensus_bytes_total", totals_.consensus},
          {"setup_bytes_total", totals_.setup},
          {"fp32_diloco_bytes", totals_.fp32_diloco},
          {"ddp_bytes", totals_.ddp},
          {"ratio_vs_diloco_fp32", totals_.fp32_diloco / method},
          {"ratio_vs_ddp", totals_.ddp / method}};
}

}  // namespace loco

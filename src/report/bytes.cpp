// The reference byte formulas and summary.json's byte fields (see include/loco/bytes.h).
#include "loco/bytes.h"

namespace loco {

int64_t param_count(const ModelConfig& m) {
  return 2 * m.vocab_size * m.n_embd + 12 * m.n_layer * m.n_embd * m.n_embd;
}

double fp32_diloco_round_bytes(int64_t num_params, int64_t reporters) {
  return double(reporters) * 2 * 4 * double(num_params);
}

double ddp_step_bytes(int64_t num_params, int64_t ranks) {
  // 2 · 2(W−1)/W · 4N · W, with the W cancelled: exact in double for any real model.
  return 2 * 2 * double(ranks - 1) * 4 * double(num_params);
}

nlohmann::json ddp_run_bytes(int64_t num_params, int64_t ranks, int64_t steps, double up_per_rank,
                             double down_per_rank) {
  const double w = double(ranks);
  const double up = up_per_rank * w, down = down_per_rank * w, total = up + down;
  const double ddp = double(steps) * ddp_step_bytes(num_params, ranks);
  return {{"bytes_up", up},
          {"bytes_down", down},
          {"bytes_total", total},
          {"fp32_diloco_bytes", nullptr},
          {"ddp_bytes", ddp},
          {"ratio_vs_diloco_fp32", nullptr},
          {"ratio_vs_ddp", total > 0 ? nlohmann::json(ddp / total) : nlohmann::json(nullptr)}};
}

}  // namespace loco

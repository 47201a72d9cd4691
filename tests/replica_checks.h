// For process tests of coordinated runs: the param_checksum every worker logged, by round.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "loco/metrics.h"

namespace loco::testing {

// round -> the set of param_checksum values that workers 0..workers-1 of `run_dir` logged for
// it (one value per round when the replicas are identical after every sync).
inline std::map<int64_t, std::set<uint64_t>> checksums_by_round(const std::string& run_dir,
                                                                int workers) {
  std::map<int64_t, std::set<uint64_t>> checksums;
  for (int k = 0; k < workers; ++k)
    for (const auto& rec :
         loco::read_metrics(run_dir + "/worker-" + std::to_string(k) + "/metrics.jsonl"))
      if (rec.contains("param_checksum"))
        checksums[rec.at("round").get<int64_t>()].insert(rec.at("param_checksum").get<uint64_t>());
  return checksums;
}

}  // namespace loco::testing

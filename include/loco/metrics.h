// metrics.jsonl: one JSON object per line, flushed as written, so a crash loses at most the
// line being written. Keys follow DESIGN.md section 3 (step, tokens, loss, lr, wall_s, ...).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>

namespace loco {

class MetricsWriter {
 public:
  // Opens `path` for appending. When `keep_up_to_step` >= 0 (a resume), lines with a larger
  // step are dropped first, so the file reads as if the run had never stopped.
  explicit MetricsWriter(const std::string& path, int64_t keep_up_to_step = -1);
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Reads every record of a metrics.jsonl file, skipping lines that are not a whole JSON object
// (a torn last line); their number goes to `skipped` when given.
std::vector<nlohmann::json> read_metrics(const std::string& path, int64_t* skipped = nullptr);

}  // namespace loco

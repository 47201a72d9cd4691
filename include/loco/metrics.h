// metrics.jsonl: one JSON object per line, flushed as written, so a crash loses at most the
// line being written. The same records also go to TensorBoard event files in `tb/` beside
// metrics.jsonl. The keys (step, tokens, loss, lr, wall_s, ...) and the event files:
// docs/design.md, "Metrics and TensorBoard".
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "loco/tensorboard.h"

namespace loco {

class MetricsWriter {
 public:
  // Opens `path` for appending and starts a new event file in `<dir of path>/tb/`. When
  // `keep_up_to_step` >= 0 (a resume), lines and events with a larger step are dropped first,
  // so both read as if the run had never stopped.
  explicit MetricsWriter(const std::string& path, int64_t keep_up_to_step = -1);
  // Appends `record` to metrics.jsonl, and its tensorboard_scalars() at its `step` (wall time
  // now) to the event file.
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }
  const std::string& event_file() const { return tb_.path(); }

 private:
  std::string path_;
  std::ofstream out_;
  EventWriter tb_;
};

// The TensorBoard scalars of a metrics record: every number, tagged with its key, except the
// bookkeeping keys `step` (the x axis), `round`, `worker`, `rank` and `param_checksum`. Booleans,
// strings and nested values are skipped.
std::vector<Scalar> tensorboard_scalars(const nlohmann::json& record);

// Reads every record of a metrics.jsonl file, skipping lines that are not a whole JSON object
// (a torn last line); their number goes to `skipped` when given.
std::vector<nlohmann::json> read_metrics(const std::string& path, int64_t* skipped = nullptr);

}  // namespace loco

// When the workers of a DiLoCo run are up: an availability schedule (sync.schedule) that
// `loco launch` replays by stopping and starting workers (docs/faults.md).
//
// The file is YAML with one entry per worker name (`loco launch` names them w0, w1, ...); a
// worker not listed is always up. Each entry gives half-open [start, end) windows in rounds of
// the coordinator or in seconds since the launch, or a CSV trace (a row per period, up while the
// row's last number is above a threshold, e.g. hours of surplus renewable power):
//
//   w1: {rounds: [[0, 4], [8, 100]]}
//   w2: {seconds: [[0, 60], [120, 1e9]]}
//   w3: {trace: solar.csv, seconds_per_row: 10, threshold: 0.5}
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace loco {

struct Availability {
  std::vector<std::pair<double, double>> rounds, seconds;  // [start, end) windows
};

class Schedule {
 public:
  Schedule() = default;
  // Reads and checks a schedule; throws ConfigError naming the file and the field.
  static Schedule load(const std::string& path);
  // Parses YAML text; `where` names it in errors, `dir` resolves relative trace paths.
  static Schedule parse(const std::string& text, const std::string& where,
                        const std::string& dir = ".");

  bool empty() const { return sites_.empty(); }
  bool lists(const std::string& site) const { return sites_.count(site) > 0; }
  std::vector<std::string> sites() const;
  // Whether `site` should be up at the coordinator's round `round`, `elapsed_s` after the launch.
  // A site with both kinds of window is up when both say so.
  bool up(const std::string& site, int64_t round, double elapsed_s) const;

 private:
  std::map<std::string, Availability> sites_;
};

}  // namespace loco

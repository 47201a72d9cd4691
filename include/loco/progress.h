// Progress lines for long work (data preparation, training): rate and ETA, at most one line
// per `interval_s`, through spdlog.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace loco {

class Progress {
 public:
  // `what` prefixes every line ("tokenize"), `unit` names what is counted ("docs").
  Progress(std::string what, int64_t total, std::string unit, double interval_s = 2.0);

  // Records `done` items so far; logs when the interval has passed (or on the last item).
  void update(int64_t done);
  // Logs the final line (total, elapsed, rate) once.
  void finish();

  double elapsed_s() const;

 private:
  std::string what_, unit_;
  int64_t total_, done_ = 0;
  double interval_s_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

// Seconds on the monotonic clock (for measuring durations).
inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "1m23s", "4.5s": a duration for humans.
std::string format_duration(double seconds);

}  // namespace loco

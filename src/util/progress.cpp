// Progress lines for long work: "tokenize: 45% 1,234,000/2,600,000 docs | 52,300 docs/s | eta 26s".
#include "loco/progress.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace loco {
namespace {

// 1234567 -> "1,234,567".
std::string group_digits(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

Progress::Progress(std::string what, int64_t total, std::string unit, double interval_s)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_(total),
      interval_s_(interval_s),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::update(int64_t done) {
  done_ = done;
  if (finished_) return;
  if (total_ > 0 && done_ >= total_) {
    finish();
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (seconds_between(last_, now) < interval_s_) return;
  last_ = now;
  double rate = done_ / std::max(elapsed_s(), 1e-9);
  std::string line = what_ + ": ";
  if (total_ > 0) {
    line += std::to_string(100 * done_ / total_) + "% " + group_digits(done_) + "/" +
            group_digits(total_);
  } else {
    line += group_digits(done_);
  }
  line += " " + unit_ + " | " + group_digits(std::llround(rate)) + " " + unit_ + "/s";
  if (total_ > 0 && rate > 0) line += " | eta " + format_duration((total_ - done_) / rate);
  spdlog::info("{}", line);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  double elapsed = elapsed_s();
  spdlog::info("{}: {} {} in {} ({} {}/s)", what_, group_digits(done_), unit_,
               format_duration(elapsed),
               group_digits(std::llround(done_ / std::max(elapsed, 1e-9))), unit_);
}

double Progress::elapsed_s() const {
  return seconds_between(start_, std::chrono::steady_clock::now());
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 59.95) return fmt::format("{:.1f}s", seconds);
  int64_t total = std::llround(seconds);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, total % 3600 / 60);
}

}  // namespace loco

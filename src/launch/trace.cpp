// Carbon-intensity traces (see include/loco/trace.h): ISO 8601 timestamps, the CSV reader and
// its checks, and the step-function lookups and integrals the schedule and the energy
// accounting use.
#include "loco/trace.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "loco/config.h"

namespace loco {
namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

// Reads exactly `n` digits at s[*i] into *out.
bool digits(const std::string& s, size_t* i, int n, int64_t* out) {
  if (*i + size_t(n) > s.size()) return false;
  int64_t v = 0;
  for (int k = 0; k < n; ++k) {
    char c = s[*i + size_t(k)];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *i += size_t(n), *out = v;
  return true;
}

bool expect(const std::string& s, size_t* i, char c) {
  if (*i >= s.size() || s[*i] != c) return false;
  ++*i;
  return true;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  std::string t = s.substr(a, b - a + 1);
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
  return t;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  for (std::string cell; std::getline(in, cell, ',');) cells.push_back(trim(cell));
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

}  // namespace

bool parse_iso8601(const std::string& text, double* epoch_s) {
  const std::string& s = text;
  size_t i = 0;
  int64_t y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  double frac = 0;
  if (!digits(s, &i, 4, &y) || !expect(s, &i, '-') || !digits(s, &i, 2, &mo) ||
      !expect(s, &i, '-') || !digits(s, &i, 2, &d))
    return false;
  if (i >= s.size() || (s[i] != 'T' && s[i] != 't' && s[i] != ' ')) return false;
  ++i;
  if (!digits(s, &i, 2, &h) || !expect(s, &i, ':') || !digits(s, &i, 2, &mi)) return false;
  if (i < s.size() && s[i] == ':') {
    ++i;
    if (!digits(s, &i, 2, &sec)) return false;
    if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
      size_t start = ++i;
      double scale = 0.1;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9')
        frac += (s[i++] - '0') * scale, scale /= 10;
      if (i == start) return false;
    }
  }
  int64_t offset_s = 0;
  if (i < s.size()) {
    if (s[i] == 'Z' || s[i] == 'z') {
      ++i;
    } else if (s[i] == '+' || s[i] == '-') {
      int sign = s[i++] == '-' ? -1 : 1;
      int64_t oh, om = 0;
      if (!digits(s, &i, 2, &oh)) return false;
      if (i < s.size() && s[i] == ':') ++i;
      if (i < s.size() && !digits(s, &i, 2, &om)) return false;
      if (oh > 23 || om > 59) return false;
      offset_s = sign * (oh * 3600 + om * 60);
    } else {
      return false;
    }
  }
  if (i != s.size()) return false;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] + (mo == 2 && leap(y)) || h > 23 || mi > 59 ||
      sec > 60)
    return false;
  *epoch_s = double(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s) + frac;
  return true;
}

IntensityTrace IntensityTrace::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read the trace");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

IntensityTrace IntensityTrace::parse(const std::string& text, const std::string& where) {
  IntensityTrace t;
  t.file_ = where;
  std::stringstream in(text);
  std::string line;
  int64_t row = 0;
  std::vector<std::string> header;
  auto bad = [&](int64_t r, size_t col, const std::string& why) {
    std::string name = col < header.size() ? " (" + header[col] + ")" : "";
    throw ConfigError(where + ": row " + std::to_string(r) + ", column " + std::to_string(col + 1) +
                      name + ": " + why);
  };
  while (std::getline(in, line)) {
    ++row;
    if (trim(line).empty()) continue;
    auto cells = split_csv(line);
    if (header.empty()) {
      header = cells;
      if (header.size() < 2)
        throw ConfigError(where + ": row " + std::to_string(row) +
                          ": expected a header: a timestamp column, then one column per region");
      for (size_t c = 1; c < header.size(); ++c) {
        if (header[c].empty()) bad(row, c, "empty region name");
        if (std::find(header.begin() + 1, header.begin() + long(c), header[c]) !=
            header.begin() + long(c))
          bad(row, c, "region '" + header[c] + "' appears twice");
      }
      t.regions_.assign(header.begin() + 1, header.end());
      t.values_.resize(t.regions_.size());
      continue;
    }
    if (cells.size() != header.size())
      bad(row, std::min(cells.size(), header.size() - 1),
          "expected " + std::to_string(header.size()) + " cells, got " +
              std::to_string(cells.size()));
    double epoch = 0;
    if (!parse_iso8601(cells[0], &epoch))
      bad(row, 0, "'" + cells[0] + "' is not an ISO 8601 timestamp (e.g. 2024-05-01T00:05:00Z)");
    if (t.times_.empty()) t.start_epoch_ = epoch;
    double at = epoch - t.start_epoch_;
    if (!t.times_.empty() && at <= t.times_.back())
      bad(row, 0,
          "'" + cells[0] + "' " + (at == t.times_.back() ? "repeats" : "comes before") +
              " the timestamp of row " + std::to_string(t.rows_.back()) +
              " (rows must be in increasing time)");
    for (size_t c = 1; c < cells.size(); ++c) {
      double v = 0;
      if (!parse_number(cells[c], &v)) bad(row, c, "'" + cells[c] + "' is not a number");
      t.values_[c - 1].push_back(v);
    }
    t.times_.push_back(at);
    t.rows_.push_back(row);
  }
  if (header.empty()) throw ConfigError(where + ": empty trace (no header, no rows)");
  if (t.times_.size() < 2)
    throw ConfigError(where + ": " + std::to_string(t.times_.size()) +
                      " data row(s); a trace needs at least 2 (its end is the last row plus the "
                      "spacing of the last two)");
  size_t n = t.times_.size();
  t.end_s_ = t.times_[n - 1] + (t.times_[n - 1] - t.times_[n - 2]);
  return t;
}

int IntensityTrace::column(const std::string& region) const {
  auto it = std::find(regions_.begin(), regions_.end(), region);
  return it == regions_.end() ? -1 : int(it - regions_.begin());
}

size_t IntensityTrace::row_at(double t) const {
  auto it = std::upper_bound(times_.begin(), times_.end(), t);
  return it == times_.begin() ? 0 : size_t(it - times_.begin()) - 1;
}

double IntensityTrace::value(const std::string& region, size_t i) const {
  int c = column(region);
  if (c < 0) throw std::out_of_range("region '" + region + "' is not in " + file_);
  return values_[size_t(c)].at(i);
}

double IntensityTrace::intensity(const std::string& region, double t) const {
  return value(region, row_at(t));
}

double IntensityTrace::integral(const std::string& region, double a, double b) const {
  int c = column(region);
  if (c < 0) throw std::out_of_range("region '" + region + "' is not in " + file_);
  const auto& v = values_[size_t(c)];
  double sum = 0;
  while (a < b) {
    // Within one repetition of the trace: the offset of a, the repetition's start.
    double base = std::floor(a / end_s_) * end_s_, x = a - base;
    size_t i = row_at(x);
    double row_end = i + 1 < times_.size() ? times_[i + 1] : end_s_;
    double step = std::min(b, base + row_end) - a;
    if (step <= 0) {  // a rounding edge at a row boundary: move on to the next row
      a = base + row_end;
      continue;
    }
    sum += v[i] * step;
    a += step;
  }
  return sum;
}

}  // namespace loco

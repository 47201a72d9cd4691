// A carbon-intensity trace: a CSV file of timestamped rows with one column per grid region, the
// shape of public marginal-carbon-intensity exports (docs/curtailment.md):
//
//   point_time,CAISO_NORTH,SPP_TX
//   2024-05-01T00:00:00Z,312.5,80
//   2024-05-01T00:05:00Z,95,82.25
//
// The first row names the columns; the first column is an ISO 8601 timestamp (see
// parse_iso8601), the others are numbers (read as gCO2/kWh by the energy accounting). Rows are
// strictly increasing in time. A region's intensity is a step function: at trace time t it is
// the value of the last row at or before t. The trace covers [first row, last row + the last
// row's spacing): an 18-hour export of 5-minute rows from 00:00 to 17:55 ends at 18:00.
// Times are "trace seconds": seconds since the first row.
#pragma once

#include <string>
#include <vector>

namespace loco {

// Seconds since 1970-01-01T00:00:00Z for an ISO 8601 date-time: YYYY-MM-DD, then 'T' or a space,
// hh:mm or hh:mm:ss (with optional fractional seconds), then 'Z', +hh:mm, +hhmm, +hh (or the same
// with '-'), or nothing (UTC). Returns false for anything else, or a field out of range.
bool parse_iso8601(const std::string& text, double* epoch_s);

class IntensityTrace {
 public:
  IntensityTrace() = default;
  // Reads and checks a trace; throws ConfigError naming the file, the row (1-based, the header is
  // row 1) and the column (1-based, and its name) of the first problem: a timestamp that is not
  // ISO 8601, out of order or repeated, a cell that is not a number, a row of the wrong width,
  // fewer than two rows.
  static IntensityTrace load(const std::string& path);
  // Parses CSV text; `where` names it in errors.
  static IntensityTrace parse(const std::string& text, const std::string& where);

  const std::string& file() const { return file_; }
  const std::vector<std::string>& regions() const { return regions_; }
  bool has(const std::string& region) const { return column(region) >= 0; }
  // The first row's time, in seconds since the epoch.
  double start_epoch() const { return start_epoch_; }
  // Trace seconds from the first row to the end of the trace (see above).
  double duration_s() const { return end_s_; }
  // Row times in trace seconds (the first is 0).
  const std::vector<double>& times() const { return times_; }
  // The 1-based file row of data row i (for messages).
  int64_t file_row(size_t i) const { return rows_[i]; }
  // The intensity of `region` at trace time t (clamped to the trace: before 0 the first row,
  // after the end the last row). Throws std::out_of_range for a region not in the file.
  double intensity(const std::string& region, double t) const;
  // The value of data row i in `region`.
  double value(const std::string& region, size_t i) const;
  // The data row in force at trace time t (clamped).
  size_t row_at(double t) const;
  // ∫ intensity(region, t) dt over [a, b) in trace seconds, with the trace repeated end to end
  // past its end (a job longer than the trace wraps around to its start).
  double integral(const std::string& region, double a, double b) const;

 private:
  int column(const std::string& region) const;

  std::string file_;
  std::vector<std::string> regions_;
  std::vector<double> times_;                // trace seconds
  std::vector<int64_t> rows_;                // file rows
  std::vector<std::vector<double>> values_;  // [region][row]
  double start_epoch_ = 0, end_s_ = 0;
};

}  // namespace loco

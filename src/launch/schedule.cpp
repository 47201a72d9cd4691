// Availability schedules (see include/loco/schedule.h).
#include "loco/schedule.h"

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loco/config.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

[[noreturn]] void bad(const std::string& where, const std::string& field, const std::string& why) {
  throw ConfigError(where + ": " + field + ": " + why);
}

double number(const YAML::Node& node, const std::string& where, const std::string& field) {
  try {
    return node.as<double>();
  } catch (const YAML::Exception&) {
    bad(where, field, "expected a number");
  }
}

// [[start, end], ...] with 0 <= start < end.
std::vector<std::pair<double, double>> windows(const YAML::Node& node, const std::string& where,
                                               const std::string& field) {
  if (!node.IsSequence()) bad(where, field, "expected a list of [start, end] windows");
  std::vector<std::pair<double, double>> out;
  for (size_t i = 0; i < node.size(); ++i) {
    std::string at = field + "[" + std::to_string(i) + "]";
    if (!node[i].IsSequence() || node[i].size() != 2) bad(where, at, "expected [start, end]");
    double a = number(node[i][0], where, at), b = number(node[i][1], where, at);
    if (a < 0 || b <= a)
      bad(where, at,
          "start must be >= 0 and below end (got [" + node[i][0].as<std::string>() + ", " +
              node[i][1].as<std::string>() + "])");
    out.emplace_back(a, b);
  }
  return out;
}

// A CSV trace: one row per `seconds_per_row`, up while the row's last number exceeds
// `threshold`. Rows whose last field is not a number (a header) are skipped.
std::vector<std::pair<double, double>> trace_windows(const std::string& path, double per_row,
                                                     double threshold, const std::string& where,
                                                     const std::string& field) {
  std::ifstream in(path);
  if (!in) bad(where, field, "cannot read the trace '" + path + "'");
  std::vector<std::pair<double, double>> out;
  std::string line;
  int64_t row = 0;
  while (std::getline(in, line)) {
    auto comma = line.find_last_of(',');
    std::string last = comma == std::string::npos ? line : line.substr(comma + 1);
    double value = 0;
    std::istringstream parse(last);
    if (!(parse >> value)) continue;
    if (value > threshold) {
      double a = double(row) * per_row, b = a + per_row;
      if (!out.empty() && out.back().second == a)
        out.back().second = b;
      else
        out.emplace_back(a, b);
    }
    ++row;
  }
  if (row == 0) bad(where, field, "the trace '" + path + "' has no numeric rows");
  return out;
}

bool inside(const std::vector<std::pair<double, double>>& w, double x) {
  for (const auto& [a, b] : w)
    if (x >= a && x < b) return true;
  return false;
}

}  // namespace

Schedule Schedule::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("sync.schedule: cannot read '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path, fs::path(path).parent_path().string());
}

Schedule Schedule::parse(const std::string& text, const std::string& where,
                         const std::string& dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(where + ": not valid YAML: " + e.what());
  }
  Schedule s;
  if (root.IsNull()) return s;
  if (!root.IsMap()) throw ConfigError(where + ": expected a map of worker name to windows");
  for (const auto& item : root) {
    std::string site = item.first.as<std::string>();
    const YAML::Node& spec = item.second;
    if (!spec.IsMap()) bad(where, site, "expected {rounds: ...}, {seconds: ...} or {trace: ...}");
    Availability a;
    double per_row = 60, threshold = 0;
    std::string trace;
    for (const auto& key : spec) {
      std::string k = key.first.as<std::string>(), field = site + "." + k;
      if (k == "rounds")
        a.rounds = windows(key.second, where, field);
      else if (k == "seconds")
        a.seconds = windows(key.second, where, field);
      else if (k == "trace")
        trace = key.second.as<std::string>();
      else if (k == "seconds_per_row")
        per_row = number(key.second, where, field);
      else if (k == "threshold")
        threshold = number(key.second, where, field);
      else
        bad(where, field, "unknown key (rounds, seconds, trace, seconds_per_row, threshold)");
    }
    if (per_row <= 0) bad(where, site + ".seconds_per_row", "must be positive");
    if (!trace.empty()) {
      if (!a.seconds.empty()) bad(where, site, "give seconds or a trace, not both");
      fs::path p(trace);
      if (p.is_relative()) p = fs::path(dir) / p;
      a.seconds = trace_windows(p.string(), per_row, threshold, where, site + ".trace");
      if (a.seconds.empty()) a.seconds.emplace_back(0, 0);  // never up (an empty window)
    }
    if (a.rounds.empty() && a.seconds.empty())
      bad(where, site, "no windows: give rounds, seconds or a trace");
    s.sites_[site] = a;
  }
  return s;
}

std::vector<std::string> Schedule::sites() const {
  std::vector<std::string> out;
  for (const auto& [name, a] : sites_) out.push_back(name);
  return out;
}

bool Schedule::up(const std::string& site, int64_t round, double elapsed_s) const {
  auto it = sites_.find(site);
  if (it == sites_.end()) return true;
  const Availability& a = it->second;
  return (a.rounds.empty() || inside(a.rounds, double(round))) &&
         (a.seconds.empty() || inside(a.seconds, elapsed_s));
}

}  // namespace loco

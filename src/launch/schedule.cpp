// Availability schedules (see include/loco/schedule.h).
#include "loco/schedule.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
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

// When a site whose region's intensity follows `trace` is powered (include/loco/schedule.h's
// rules): on as soon as the intensity is below the threshold, off once it has stayed at or above
// it for hysteresis_s. The intensity is constant within a row, so the state changes only at a
// row's start or hysteresis_s after one.
std::vector<std::pair<double, double>> powered_intervals(const IntensityTrace& trace,
                                                         const TraceSite& site) {
  std::vector<std::pair<double, double>> out;
  const auto& times = trace.times();
  bool on = false;
  double on_since = 0, above_since = -1;
  for (size_t i = 0; i < times.size(); ++i) {
    double a = times[i], b = i + 1 < times.size() ? times[i + 1] : trace.duration_s();
    if (trace.value(site.region, i) < site.below) {
      above_since = -1;
      if (!on) on = true, on_since = a;
      continue;
    }
    if (!on) continue;
    if (above_since < 0) above_since = a;
    double off = above_since + site.hysteresis_s;
    if (off < b) {
      out.emplace_back(on_since, off);
      on = false, above_since = -1;
    }
  }
  if (on) out.emplace_back(on_since, trace.duration_s());
  return out;
}

// power: {train_kw, idle_kw} over `base` (NaN: not given yet).
PowerModel power_model(const YAML::Node& node, PowerModel base, const std::string& where,
                       const std::string& field) {
  if (!node.IsMap()) bad(where, field, "expected {train_kw: KW, idle_kw: KW}");
  for (const auto& key : node) {
    std::string k = key.first.as<std::string>(), f = field + "." + k;
    double v = number(key.second, where, f);
    if (!(v >= 0)) bad(where, f, "must be >= 0 (kW)");
    if (k == "train_kw")
      base.train_kw = v;
    else if (k == "idle_kw")
      base.idle_kw = v;
    else
      bad(where, f, "unknown key (train_kw, idle_kw)");
  }
  return base;
}

}  // namespace

const char* state_name(SiteState s) {
  switch (s) {
    case SiteState::kDown:
      return "down";
    case SiteState::kProvisioning:
      return "provisioning";
    case SiteState::kUp:
      return "up";
  }
  return "?";
}

Schedule Schedule::parse_trace(const YAML::Node& root, const std::string& where,
                               const std::string& dir) {
  Schedule s;
  const double unset = std::numeric_limits<double>::quiet_NaN();
  s.power_ = {unset, unset};
  YAML::Node sites;
  std::string trace;
  for (const auto& key : root) {
    std::string k = key.first.as<std::string>();
    if (k == "trace") {
      if (!key.second.IsScalar()) bad(where, k, "expected the path of a CSV file");
      trace = key.second.as<std::string>();
    } else if (k == "speed") {
      s.speed_ = number(key.second, where, k);
      if (!(s.speed_ > 0)) bad(where, k, "must be > 0 (trace seconds per wall-clock second)");
    } else if (k == "power") {
      s.power_ = power_model(key.second, s.power_, where, k);
    } else if (k == "sites") {
      sites = key.second;
    } else {
      bad(where, k, "unknown key (trace, speed, power, sites)");
    }
  }
  if (trace.empty()) bad(where, "trace", "missing: a trace schedule needs its CSV file");
  if (!sites.IsMap() || sites.size() == 0)
    bad(where, "sites", "expected a map of site name to {region: ..., below: ...}");
  fs::path p(trace);
  if (p.is_relative()) p = fs::path(dir) / p;
  if (!fs::exists(p)) bad(where, "trace", "cannot read the trace '" + p.string() + "'");
  s.trace_ = IntensityTrace::load(p.string());
  for (const auto& item : sites) {
    std::string name = item.first.as<std::string>(), at = "sites." + name;
    const YAML::Node& spec = item.second;
    if (!spec.IsMap()) bad(where, at, "expected {region: ..., below: ...}");
    TraceSite site;
    site.below = std::numeric_limits<double>::infinity();
    site.window_below = std::nan("");  // unset: `below`
    site.power = s.power_;
    for (const auto& key : spec) {
      std::string k = key.first.as<std::string>(), field = at + "." + k;
      if (k == "region")
        site.region = key.second.as<std::string>();
      else if (k == "below")
        site.below = number(key.second, where, field);
      else if (k == "window_below")
        site.window_below = number(key.second, where, field);
      else if (k == "hysteresis_s" || k == "provision_s") {
        double v = number(key.second, where, field);
        if (!(v >= 0)) bad(where, field, "must be >= 0 (trace seconds)");
        (k == "hysteresis_s" ? site.hysteresis_s : site.provision_s) = v;
      } else if (k == "power")
        site.power = power_model(key.second, site.power, where, field);
      else
        bad(where, field,
            "unknown key (region, below, hysteresis_s, provision_s, window_below, power)");
    }
    if (std::isnan(site.window_below))  // unset: `below`, and no window at all without one
      site.window_below = std::isinf(site.below) ? -site.below : site.below;
    if (site.region.empty()) bad(where, at + ".region", "missing: the trace column it follows");
    if (!s.trace_.has(site.region)) {
      std::string all;
      for (const auto& r : s.trace_.regions()) all += (all.empty() ? "" : ", ") + r;
      bad(where, at + ".region",
          "'" + site.region + "' is not a column of " + p.string() + " (row 1 has " + all + ")");
    }
    if (std::isnan(site.power.train_kw) || std::isnan(site.power.idle_kw))
      bad(where, at + ".power",
          "no train_kw or idle_kw: give power: {train_kw: KW, idle_kw: KW} at the top of the "
          "file or for the site");
    site.powered = powered_intervals(s.trace_, site);
    bool ever_up = false;
    for (const auto& [on, off] : site.powered) ever_up = ever_up || off - on > site.provision_s;
    if (!ever_up) {
      size_t low = 0;
      for (size_t i = 1; i < s.trace_.times().size(); ++i)
        if (s.trace_.value(site.region, i) < s.trace_.value(site.region, low)) low = i;
      std::ostringstream why;
      why << "never up over the trace " << p.string() << ": " << site.region
          << "'s lowest intensity is " << s.trace_.value(site.region, low) << " (row "
          << s.trace_.file_row(low) << ")"
          << (site.powered.empty() ? ", not below " : ", and no window below ") << site.below
          << (site.powered.empty() ? "" : " outlasts provision_s");
      bad(where, at, why.str());
    }
    s.trace_sites_[name] = site;
  }
  return s;
}

SiteState Schedule::state(const std::string& site, double t) const {
  auto it = trace_sites_.find(site);
  if (it == trace_sites_.end() || t < 0 || t >= trace_.duration_s()) return SiteState::kDown;
  const TraceSite& s = it->second;
  for (const auto& [on, off] : s.powered)
    if (t >= on && t < off)
      return t < on + s.provision_s ? SiteState::kProvisioning : SiteState::kUp;
  return SiteState::kDown;
}

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
  const YAML::Node& top = root;  // const: looking a key up adds nothing
  if (top["trace"] || top["sites"]) return parse_trace(root, where, dir);
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
  for (const auto& [name, t] : trace_sites_) out.push_back(name);
  return out;
}

bool Schedule::up(const std::string& site, int64_t round, double elapsed_s) const {
  if (trace_sites_.count(site)) return state(site, trace_time(elapsed_s)) == SiteState::kUp;
  auto it = sites_.find(site);
  if (it == sites_.end()) return true;
  const Availability& a = it->second;
  return (a.rounds.empty() || inside(a.rounds, double(round))) &&
         (a.seconds.empty() || inside(a.seconds, elapsed_s));
}

}  // namespace loco

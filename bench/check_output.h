// What loco_gpu_check (bench/gpu_check.cpp) prints: one JSON object per measurement on a line of
// its own ({"check": ...}, which bench/gpu_check.sh collects into gpu_check.jsonl), and lines of
// a human-readable summary kept for the end. Header-only, plain C++17: the check is also built
// with g++ directly (gpu_check.sh's fallback), without loco's other dependencies.
#pragma once

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace loco::bench {

inline std::vector<std::string> g_summary;  // human-readable lines, printed at the end

// One JSON object per line: emit("check", {num("x", 1.0), str("y", "z")}).
inline std::string num(const std::string& key, double v) {
  std::ostringstream s;
  s.precision(6);
  s << '"' << key << "\":";
  if (std::isfinite(v))
    s << v;
  else
    s << "null";
  return s.str();
}
inline std::string str(const std::string& key, const std::string& v) {
  std::string esc;
  for (char c : v) {
    if (c == '"' || c == '\\') esc += '\\';
    esc += (c == '\n' ? ' ' : c);
  }
  return "\"" + key + "\":\"" + esc + "\"";
}
inline void emit(const std::string& check, const std::vector<std::string>& fields) {
  std::string line = "{\"check\":\"" + check + "\"";
  for (const auto& f : fields) line += "," + f;
  std::printf("%s}\n", line.c_str());
  std::fflush(stdout);
}
inline std::string fmt(const char* format, double a = 0, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c, d);
  return buf;
}

}  // namespace loco::bench

// launch_events.jsonl (events.h): a line per start, exit, restart, give-up and stop, with the
// coordinator's round read from the tail of its metrics.jsonl.
#include "events.h"

#include <string.h>

#include <chrono>

namespace loco::launcher {

EventLog::EventLog(const std::string& path, std::string coordinator_metrics, bool append)
    : out_(path, append ? std::ios::app : std::ios::trunc),
      metrics_(std::move(coordinator_metrics)) {
  if (!out_) throw std::runtime_error("launch: cannot write " + path);
}

void EventLog::write(const Part& p, const std::string& event, nlohmann::json fields) {
  if (!out_.is_open()) return;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  nlohmann::json line = {{"time", std::chrono::duration<double>(now).count()},
                         {"process", p.label},
                         {"pid", p.pid},
                         {"event", event}};
  for (auto& [k, v] : fields.items()) line[k] = v;
  if (!metrics_.empty()) {
    int64_t round = last_logged_round(metrics_);
    if (round >= 0) line["round"] = round;
  }
  out_ << line.dump() << "\n";
  out_.flush();
}

int64_t last_logged_round(const std::string& metrics_path) {
  std::ifstream in(metrics_path, std::ios::ate);
  if (!in) return -1;
  const std::streamoff size = in.tellg(), tail = std::min<std::streamoff>(size, 64 * 1024);
  std::string text(size_t(tail), '\0');
  in.seekg(size - tail);
  in.read(text.data(), tail);
  int64_t round = -1;
  size_t start = tail < size ? text.find('\n') + 1 : 0;  // skip a line cut by the tail
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) break;  // a line still being written
    auto record = nlohmann::json::parse(text.substr(start, end - start), nullptr, false);
    if (record.is_object() && record.contains("round") && record["round"].is_number_integer())
      round = std::max(round, record["round"].get<int64_t>());
    start = end + 1;
  }
  return round;
}

std::string describe_exit(const Part& p) {
  if (p.signal > 0)
    return "signal " + std::to_string(p.signal) + " (" + ::strsignal(p.signal) + ")";
  return "status " + std::to_string(p.status);
}

}  // namespace loco::launcher

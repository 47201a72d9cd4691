// The slow link in loco's own transport: token buckets, the plan of what is shaped where, the DDP
// model and `--link` parsing (see include/loco/link.h).
#include "loco/link.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace loco {

TokenBucket::TokenBucket(double mbps, double burst_bytes)
    : bytes_per_s_(mbps * 1e6 / 8),
      burst_(burst_bytes),
      tokens_(burst_bytes),
      last_(Clock::now()) {}

double TokenBucket::take(uint64_t bytes) {
  Clock::time_point until;
  double wait = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = Clock::now();
    if (now > last_) {  // a debt keeps last_ ahead of the clock until it is paid
      tokens_ = std::min(
          burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * bytes_per_s_);
      last_ = now;
    }
    tokens_ -= double(bytes);
    if (tokens_ >= 0) return 0;
    // Pay the debt off: the link is busy until last_ + debt / rate; later takers queue after it.
    wait = -tokens_ / bytes_per_s_;
    last_ += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait));
    tokens_ = 0;
    until = last_;
    wait = std::chrono::duration<double>(until - now).count();
  }
  std::this_thread::sleep_until(until);
  return wait;
}

LinkPlan plan_link(const LinkConfig& link) {
  LinkPlan plan;
  if (!link.limited()) return plan;
  const bool netns = link.shaping == "netns";
  const char* env = std::getenv(kNetemEnv);
  const bool netem = netns && env && std::string(env) == "1";
  plan.pace = !netns && link.mbps > 0;
  plan.add_latency = link.latency_ms > 0 && !netem;
  std::string bandwidth = link.mbps <= 0 ? "unlimited"
                          : netns        ? "tc tbf on both ends of each worker's veth"
                                         : "token bucket per direction in the gRPC transport";
  std::string latency = link.latency_ms <= 0 ? "none"
                        : netem              ? "tc netem, per packet, each way"
                                             : "once per push and per pull, in the gRPC transport";
  plan.record = {{"mbps", link.mbps},
                 {"latency_ms", link.latency_ms},
                 {"shaping", netns ? "netns" : "token_bucket"},
                 {"bandwidth", bandwidth},
                 {"latency", latency}};
  return plan;
}

LinkShaper::LinkShaper(const LinkConfig& link) : plan_(plan_link(link)) {
  if (plan_.add_latency) latency_s_ = link.latency_ms / 1e3;
  if (plan_.pace) {
    up_ = std::make_unique<TokenBucket>(link.mbps);
    down_ = std::make_unique<TokenBucket>(link.mbps);
  }
}

void LinkShaper::latency() {
  if (latency_s_ <= 0) return;
  std::this_thread::sleep_for(std::chrono::duration<double>(latency_s_));
  std::lock_guard<std::mutex> lock(mu_);
  waited_s_ += latency_s_;
}

void LinkShaper::sent(uint64_t bytes) {
  if (!up_) return;
  double w = up_->take(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  waited_s_ += w;
}

void LinkShaper::received(uint64_t bytes) {
  if (!down_) return;
  double w = down_->take(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  waited_s_ += w;
}

double LinkShaper::waited_s() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waited_s_;
}

double ddp_link_seconds(const LinkConfig& link, int64_t bytes, int64_t world) {
  if (world <= 1 || !link.limited()) return 0;
  const double steps = 2.0 * double(world - 1);  // reduce-scatter, then all-gather
  double s = steps * link.latency_ms / 1e3;
  if (link.mbps > 0) s += steps / double(world) * double(bytes) * 8 / (link.mbps * 1e6);
  return s;
}

namespace {

// "100mbit" -> (100, "mbit"); the number must be non-negative and finite.
std::pair<double, std::string> number_and_unit(const std::string& spec, const std::string& item) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(item, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || !(x >= 0) || x > 1e12)
    throw ConfigError("--link '" + spec + "': '" + item +
                      "' is not a rate (100mbit) or a latency (50ms)");
  std::string unit = item.substr(used);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return {x, unit};
}

}  // namespace

std::vector<std::string> link_overrides(const std::string& spec) {
  std::vector<std::string> out;
  bool rate = false, latency = false;
  std::stringstream items(spec);
  for (std::string item; std::getline(items, item, ',');) {
    item.erase(std::remove_if(item.begin(), item.end(), ::isspace), item.end());
    auto [x, unit] = number_and_unit(spec, item);
    std::ostringstream v;
    v.precision(12);
    if (unit.empty() || unit == "mbit" || unit == "mbps" || unit == "kbit" || unit == "kbps" ||
        unit == "gbit" || unit == "gbps") {
      const char u = unit.empty() ? 'm' : unit[0];
      v << x * (u == 'k' ? 1e-3 : u == 'g' ? 1e3 : 1.0);
      if (rate) throw ConfigError("--link '" + spec + "': two rates");
      rate = true;
      out.push_back("sync.link.mbps=" + v.str());
    } else if (unit == "ms" || unit == "s" || unit == "us") {
      v << x * (unit == "s" ? 1e3 : unit == "us" ? 1e-3 : 1.0);
      if (latency) throw ConfigError("--link '" + spec + "': two latencies");
      latency = true;
      out.push_back("sync.link.latency_ms=" + v.str());
    } else {
      throw ConfigError("--link '" + spec + "': unknown unit '" + unit +
                        "' (rates: kbit, mbit, gbit; latencies: us, ms, s; e.g. 100mbit,50ms)");
    }
  }
  if (out.empty()) throw ConfigError("--link: empty (e.g. --link 100mbit,50ms)");
  return out;
}

}  // namespace loco

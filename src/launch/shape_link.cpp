// How `loco launch` shapes sync.link (docs/link.md): network namespaces with tc when it may
// (netns.h), else the token bucket in each worker's transport; DDP's link is modelled. It rewrites
// the planned parts' arguments (and namespaces) to match.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "loco/link.h"
#include "plan.h"

namespace loco::launcher {
namespace {

// sync.link with real shaping: every member's processes in a namespace of their own, the
// coordinator listening on the bridge. Returns null (and leaves `parts` as planned) when netns
// cannot be used; the caller falls back to the token bucket.
std::unique_ptr<NetnsLink> netns_link(const Config& config, std::vector<Part>& parts) {
  int members = 0;
  for (const auto& p : parts) members = std::max(members, p.member + 1);
  const bool demanded = config.sync.link.shaping == "netns";
  std::string why = netns_unavailable();
  std::unique_ptr<NetnsLink> net;
  if (why.empty()) {
    try {
      net = std::make_unique<NetnsLink>(config.sync.link, members);
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  if (!net) {
    if (demanded)
      throw ConfigError("sync.link.shaping is netns but the namespaces cannot be set up: " + why +
                        " (use auto or token_bucket to shape in loco's transport instead)");
    spdlog::warn(
        "launch: sync.link: no netns shaping ({}); the token bucket in loco's transport "
        "shapes instead",
        why);
    return nullptr;
  }
  const std::string& address = config.sync.coordinator.address;
  const std::string reach = net->host_address() + address.substr(address.rfind(':'));
  for (auto& p : parts) {
    auto coordinator = std::find(p.args.begin(), p.args.end(), "--coordinator");
    if (p.member < 0)  // the coordinator, on the host: listen where the namespaces reach it
      p.args.insert(p.args.end(), {"--set", "sync.coordinator.address=" + reach});
    else if (coordinator != p.args.end() && coordinator + 1 != p.args.end())
      *(coordinator + 1) = reach;
    if (p.member >= 0) p.netns = net->ns_name(p.member);
    p.args.insert(p.args.end(), {"--set", "sync.link.shaping=netns"});
    p.env.emplace_back(kNetemEnv, net->netem() ? "1" : "0");
  }
  spdlog::info("launch: sync.link shaped by netns: {}", net->describe());
  return net;
}

}  // namespace

// Decides how sync.link is shaped for this run and tells every part (docs/link.md): netns when
// asked for or possible (auto), else the transport's token bucket; DDP's is modelled.
std::unique_ptr<NetnsLink> shape_link(const Config& config, std::vector<Part>& parts) {
  const LinkConfig& link = config.sync.link;
  if (!link.limited()) return nullptr;
  if (config.sync.mode == Mode::kSingle && config.sync.sites.empty()) {
    spdlog::warn("launch: sync.link has nothing to shape with sync.mode single");
    return nullptr;
  }
  if (config.sync.mode == Mode::kDdp && config.sync.sites.empty()) {
    spdlog::info(
        "launch: sync.link {} Mbit/s, {} ms: modelled per DDP step (2(W-1)/W x bytes at "
        "the rate, 2(W-1) latencies)",
        link.mbps, link.latency_ms);
    return nullptr;
  }
  const bool between_sites = config.sync.sites.size() != 1;
  std::unique_ptr<NetnsLink> net;
  if (between_sites && link.shaping != "token_bucket") net = netns_link(config, parts);
  if (!net) {
    for (auto& p : parts) p.args.insert(p.args.end(), {"--set", "sync.link.shaping=token_bucket"});
    spdlog::info("launch: sync.link {} Mbit/s, {} ms: token bucket in each worker's transport",
                 link.mbps, link.latency_ms);
  }
  return net;
}

}  // namespace loco::launcher

// Real link shaping for `loco launch` (sync.link.shaping auto or netns; docs/link.md): a bridge
// on the host with the coordinator's address, and per member (a worker, or a site's ranks) a
// network namespace joined to it by a veth pair. tc's tbf limits both ends of each veth to
// sync.link.mbps (the worker's upload leaves its namespace end, its download the host end);
// netem adds sync.link.latency_ms each way when the kernel has sch_netem (it is tried, not
// assumed). Names carry the launcher's pid, so parallel runs do not collide; the destructor
// removes everything, also when a part failed or the run was interrupted. Needs root, `ip` and
// `tc` (iproute2).
#pragma once

#include <string>
#include <vector>

#include "loco/config.h"

namespace loco {

class NetnsLink {
 public:
  // Sets up `members` namespaces shaped to `link`; throws std::runtime_error saying which step
  // failed (after undoing the steps that worked).
  NetnsLink(const LinkConfig& link, int members);
  ~NetnsLink();
  NetnsLink(const NetnsLink&) = delete;
  NetnsLink& operator=(const NetnsLink&) = delete;

  const std::string& host_address() const { return host_ip_; }  // the bridge's, for the coordinator
  const std::string& ns_name(int member) const { return namespaces_[size_t(member)]; }
  bool netem() const { return netem_; }
  std::string describe() const;  // one line: what is shaped and how, for the log

 private:
  void setup_member(int k);
  void shape(const std::string& dev, const std::string& ns);
  void teardown();

  LinkConfig link_;
  std::string tag_, bridge_, host_ip_, subnet_;
  std::vector<std::string> namespaces_, host_veths_;
  bool bridge_up_ = false, netem_ = false, netem_tried_ = false;
};

// Why netns shaping cannot run here ("" when it may: root, with ip and tc on the PATH).
std::string netns_unavailable();

// Moves the calling process into network namespace `name` (in a launched child before exec, as
// `ip netns exec` does). Returns false on failure, with errno set.
bool enter_netns(const std::string& name);

}  // namespace loco

// Namespaces, veths and tc qdiscs for a shaped `loco launch` (see src/launch/netns.h).
#include "netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace loco {
namespace {

struct Outcome {
  int code = -1;
  std::string output;  // stdout and stderr, trailing newlines dropped
};

Outcome run(const std::string& command) {
  Outcome out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return out;
  std::array<char, 1024> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) out.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  out.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  while (!out.output.empty() && out.output.back() == '\n') out.output.pop_back();
  return out;
}

void must(const std::string& command) {
  Outcome r = run(command);
  if (r.code != 0)
    throw std::runtime_error("`" + command + "` failed: " +
                             (r.output.empty() ? "exit " + std::to_string(r.code) : r.output));
}

bool on_path(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(std::string(path ? path : "") + ":/usr/sbin:/sbin");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) return true;
  return false;
}

// A 10.a.b.0/24 that no address or route of the host mentions yet ("10.a.b.").
std::string free_subnet(int seed) {
  std::string used = run("ip -4 -o addr show").output + "\n" + run("ip -4 route show").output;
  for (int i = 0; i < 500; ++i) {
    int x = seed + i * 7919;
    std::string prefix =
        "10." + std::to_string(200 + (x / 256) % 50) + "." + std::to_string(x % 256) + ".";
    if (used.find(prefix) == std::string::npos) return prefix;
  }
  throw std::runtime_error("no free 10.x.y.0/24 subnet for the namespaces");
}

// Whether this process runs under chroot: its root is not the root of init's mount namespace.
// /proc/1/root cannot always be read (no ptrace rights over init: seen in a sandbox, where the
// check then failed open and `ip netns add` left /run/netns mounted), so first: a chroot's root
// is a plain directory, not a mount point, and /proc/self/mountinfo (whose mount points are
// relative to this process's root) lists no mount at "/".
bool inside_chroot() {
  std::ifstream mounts("/proc/self/mountinfo");
  if (mounts) {
    bool root_mounted = false;
    for (std::string line; std::getline(mounts, line);) {
      std::istringstream fields(line);
      std::string id, parent, dev, root, mount_point;
      if (fields >> id >> parent >> dev >> root >> mount_point && mount_point == "/")
        root_mounted = true;
    }
    if (!root_mounted) return true;
  }
  struct stat root {
  }, init_root{};
  return ::stat("/", &root) == 0 && ::stat("/proc/1/root", &init_root) == 0 &&
         (root.st_dev != init_root.st_dev || root.st_ino != init_root.st_ino);
}

}  // namespace

std::string netns_unavailable() {
  if (::geteuid() != 0) return "not running as root";
  if (!on_path("ip")) return "`ip` (iproute2) is not installed";
  if (!on_path("tc")) return "`tc` (iproute2) is not installed";
  // In a chroot `ip netns add` cannot mount the namespace, and the mount of /run/netns it makes
  // first stays behind on the host: do not try.
  if (inside_chroot())
    return "running inside a chroot (network namespaces cannot be mounted there)";
  // Root with the tools is not enough: inside a container `ip netns` may fail to mount its
  // namespaces. Try one.
  const std::string probe = "loco-probe-" + std::to_string(::getpid());
  Outcome r = run("ip netns add " + probe + " && ip -n " + probe + " link set lo up");
  run("ip netns del " + probe);
  if (r.code != 0)
    return "network namespaces do not work here (" +
           (r.output.empty() ? "exit " + std::to_string(r.code) : r.output) + ")";
  return "";
}

bool enter_netns(const std::string& name) {
  int fd = ::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

NetnsLink::NetnsLink(const LinkConfig& link, int members) : link_(link) {
  if (members < 1 || members > 250)
    throw std::runtime_error("netns shaping handles 1 to 250 members, not " +
                             std::to_string(members));
  tag_ = std::to_string(::getpid());
  bridge_ = "lcb" + tag_;
  subnet_ = free_subnet(::getpid());
  host_ip_ = subnet_ + "1";
  try {
    must("ip link add " + bridge_ + " type bridge");
    bridge_up_ = true;
    must("ip addr add " + host_ip_ + "/24 dev " + bridge_);
    must("ip link set " + bridge_ + " up");
    for (int k = 0; k < members; ++k) setup_member(k);
  } catch (...) {
    teardown();
    throw;
  }
}

NetnsLink::~NetnsLink() {
  teardown();
}

void NetnsLink::setup_member(int k) {
  const std::string ns = "loco-" + tag_ + "-" + std::to_string(k);
  const std::string host = "lc" + tag_ + "h" + std::to_string(k);
  const std::string peer = "lc" + tag_ + "n" + std::to_string(k);
  must("ip netns add " + ns);
  namespaces_.push_back(ns);
  must("ip link add " + host + " type veth peer name " + peer);
  host_veths_.push_back(host);
  must("ip link set " + peer + " netns " + ns);
  must("ip link set " + host + " master " + bridge_ + " up");
  must("ip -n " + ns + " addr add " + subnet_ + std::to_string(k + 2) + "/24 dev " + peer);
  must("ip -n " + ns + " link set " + peer + " up");
  must("ip -n " + ns + " link set lo up");  // a site's ranks rendezvous on 127.0.0.1
  shape(host, "");                          // towards the worker: its download
  shape(peer, ns);                          // away from it: its upload
}

// Root qdisc of `dev`: netem (when latency is asked and the kernel has it) with tbf under it, or
// tbf alone. netem is tried once; its absence is remembered.
void NetnsLink::shape(const std::string& dev, const std::string& ns) {
  const std::string tc = ns.empty() ? "tc" : "tc -n " + ns;
  std::string parent = "root handle 1:";
  if (link_.latency_ms > 0 && (netem_ || !netem_tried_)) {
    netem_tried_ = true;
    std::ostringstream delay;
    delay << std::llround(link_.latency_ms * 1000) << "us";
    Outcome r = run(tc + " qdisc add dev " + dev + " root handle 1: netem delay " + delay.str() +
                    " limit 100000");
    if (r.code == 0) {
      netem_ = true;
      parent = "parent 1:1 handle 10:";
    } else if (netem_) {
      throw std::runtime_error("netem on " + dev + " failed: " + r.output);
    } else {
      spdlog::warn("launch: no netem here ({}); the transport adds sync.link.latency_ms instead",
                   r.output);
    }
  }
  if (link_.mbps <= 0) return;
  const double bits = link_.mbps * 1e6;
  // burst: at least 32 KiB and 10 ms at the rate; a queue of 400 ms at the rate before drops.
  const long burst = std::max(32768L, std::lround(bits / 8 / 100));
  must(tc + " qdisc add dev " + dev + " " + parent + " tbf rate " +
       std::to_string(std::llround(bits)) + "bit burst " + std::to_string(burst) +
       " latency 400ms");
}

void NetnsLink::teardown() {
  for (const auto& ns : namespaces_) {
    Outcome r = run("ip netns del " + ns);  // takes its veth pair with it
    if (r.code != 0) spdlog::warn("launch: could not remove namespace {}: {}", ns, r.output);
  }
  for (const auto& veth : host_veths_) run("ip link del " + veth);  // already gone, normally
  if (bridge_up_) {
    Outcome r = run("ip link del " + bridge_);
    if (r.code != 0) spdlog::warn("launch: could not remove bridge {}: {}", bridge_, r.output);
  }
  namespaces_.clear(), host_veths_.clear(), bridge_up_ = false;
}

std::string NetnsLink::describe() const {
  std::ostringstream out;
  out << namespaces_.size() << " network namespace(s) (loco-" << tag_ << "-*) on bridge " << bridge_
      << ", coordinator at " << host_ip_ << "; bandwidth: ";
  if (link_.mbps > 0)
    out << "tc tbf " << link_.mbps << " Mbit/s each way per worker";
  else
    out << "unlimited";
  out << "; latency: ";
  if (link_.latency_ms <= 0)
    out << "none";
  else if (netem_)
    out << "tc netem " << link_.latency_ms << " ms each way, per packet";
  else
    out << link_.latency_ms << " ms once per push/pull in the transport (no netem in this kernel)";
  return out.str();
}

}  // namespace loco

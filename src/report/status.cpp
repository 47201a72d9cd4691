// `loco status HOST:PORT [--watch [S]]` (include/loco/status.h): asks the coordinator's Status
// RPC with a worker's secret and TLS options and prints the run and its members as a table.
#include "loco/status.h"

#include <spdlog/fmt/fmt.h>

#include <chrono>
#include <ostream>
#include <stdexcept>
#include <thread>

#include <unistd.h>

#include "loco/config.h"
#include "loco/coord_client.h"
#include "loco/progress.h"

namespace loco {
namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

// The coordinator settings `loco status` connects with: --config's sync.coordinator, the flags
// over it.
CoordinatorConfig client_config(const StatusOptions& o, std::string& address) {
  CoordinatorConfig co;
  if (!o.config_path.empty()) co = load_config(o.config_path).sync.coordinator;
  if (address.empty()) address = co.address;
  if (!o.secret_file.empty()) co.secret_file = o.secret_file;
  if (!o.tls_ca.empty()) co.tls_ca = o.tls_ca;
  if (!o.tls_cert.empty()) co.tls_cert = o.tls_cert;
  if (!o.tls_key.empty()) co.tls_key = o.tls_key;
  if (!co.secret_file.empty()) read_secret(co.secret_file);  // a bad file fails here, named
  for (const auto& [key, path] : {std::pair{"--tls-ca (sync.coordinator.tls.ca)", co.tls_ca},
                                  {"--tls-cert (sync.coordinator.tls.cert)", co.tls_cert},
                                  {"--tls-key (sync.coordinator.tls.key)", co.tls_key}})
    if (!path.empty()) read_config_file(key, path);
  if (co.tls_cert.empty() != co.tls_key.empty())
    throw ConfigError("--tls-cert and --tls-key go together (a client certificate and its key)");
  return co;
}

// One line naming the address for a failed Status call.
std::string explain(const RpcError& e, const std::string& address, const CoordinatorConfig& co) {
  std::string why = e.what();  // "coordinator refused Status (CODE): message"
  if (why.find("): ") != std::string::npos) why = why.substr(why.find("): ") + 3);
  if (std::string(e.what()).find("(UNAUTHENTICATED)") != std::string::npos)
    return "coordinator at " + address + " refused the status request: " +
           (co.secret_file.empty() ? "it wants the shared secret (--secret-file)"
                                   : "wrong shared secret (--secret-file " + co.secret_file + ")");
  if (e.code == RpcError::kUnavailable)
    return "coordinator at " + address + " unreachable: is it running" +
           (co.tls_ca.empty() && co.tls_cert.empty() ? "" : ", and do the TLS options agree") +
           "? (" + why + ")";
  return "coordinator at " + address + ": " + why;
}

}  // namespace

std::string status_table(const CoordinatorStatus& s, const std::string& address) {
  std::string out = fmt::format(
      "coordinator {}  {}  round {}/{}  tokens {}  up {}  down {}  val loss {}  up for {}\n",
      address, s.mode.empty() ? "?" : s.mode, s.round, s.total_rounds, s.tokens,
      human_bytes(s.bytes_up), human_bytes(s.bytes_down),
      s.val_losses.empty() && s.last_val_loss == 0 ? "-" : fmt::format("{:.4f}", s.last_val_loss),
      format_duration(s.wall_s));
  if (s.members.empty()) return out + "  no members\n";
  out += fmt::format("  {:<10} {:<24} {:>5}  {:<12} {:>9}  {:>10} {:>10}  {}\n", "id", "name",
                     "shard", "doing", "last loss", "up", "down", "last heard");
  for (const auto& m : s.members)
    out += fmt::format(
        "  {:<10} {:<24} {:>5}  {:<12} {:>9}  {:>10} {:>10}  {} ago\n", m.worker_id, m.name,
        m.shard, member_doing(m), m.last_loss == 0 ? "-" : fmt::format("{:.4f}", m.last_loss),
        human_bytes(m.bytes_up), human_bytes(m.bytes_down), format_duration(m.seen_s_ago));
  return out;
}

int run_status(const StatusOptions& o, const std::atomic<bool>& stop, std::ostream& out) {
  std::string address = o.address;
  const CoordinatorConfig co = client_config(o, address);
  CoordinatorClient client(address, co);
  const bool clear = o.watch_s > 0 && !o.json && ::isatty(STDOUT_FILENO) && &out == &std::cout;
  for (int shown = 0; !stop; ++shown) {
    CoordinatorStatus s;
    try {
      s = client.status(5);
    } catch (const RpcError& e) {
      if (shown == 0 || e.code != RpcError::kUnavailable)
        throw std::runtime_error(explain(e, address, co));
      out << "coordinator at " << address << " is gone (the run ended or it stopped)\n";
      return 0;
    }
    if (clear) out << "\033[H\033[2J";
    out << (o.json ? status_json(s).dump() + "\n" : status_table(s, address)) << std::flush;
    if (o.watch_s <= 0) return 0;
    if (!clear && !o.json) out << "\n";
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.watch_s);
    while (!stop && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

}  // namespace loco

// `loco launch --dry-run`: prints the planned parts as shell commands (environment, then
// `loco ...`), with a note on what changes when they run on several hosts.
#include <ostream>

#include "plan.h"

namespace loco::launcher {
namespace {

std::string command_line(const Part& p) {
  std::string line;
  for (const auto& [k, v] : p.env) line += k + "=" + shell_quote(v) + " ";
  line += "loco";
  for (const auto& a : p.args) line += " " + shell_quote(a);
  return line;
}

}  // namespace

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" '\"$\\`*?[]{}()<>|&;!#~\t\n") == std::string::npos) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

void print_dry_run(std::ostream& out, const Config& config, const std::vector<Part>& parts,
                   bool scheduled) {
  out << "# " << parts.size() << " processes for sync.mode " << mode_name(config.sync.mode);
  if (!config.sync.sites.empty()) out << " between " << config.sync.sites.size() << " site(s)";
  out << "\n";
  if (config.sync.sites.size() == 1) {
    out << "# One site is plain DDP, with no coordinator. Across hosts: MASTER_ADDR is the "
           "host of the site's rank 0; each host sets its own RANK (and LOCAL_RANK).\n";
  } else if (!config.sync.sites.empty()) {
    out << "# Across hosts: run the coordinator on a host that every site's rank 0 can reach "
           "and pass --coordinator HOST:PORT to every rank. Inside a site, MASTER_ADDR is "
           "the host of the site's rank 0 and MASTER_PORT a free port there; each host sets "
           "its own RANK (and LOCAL_RANK). Sites talk only to the coordinator.\n";
  } else if (coordinated(config.sync.mode)) {
    out << "# Across hosts: run the coordinator on a host the workers can reach, set "
           "sync.coordinator.address to HOST:PORT there and pass --coordinator HOST:PORT "
           "to every worker.\n";
  } else if (config.sync.mode == Mode::kDdp) {
    out << "# Across hosts: MASTER_ADDR is rank 0's host; each host sets its own RANK "
           "(and LOCAL_RANK); the same works under torchrun-like launchers, srun or "
           "Kubernetes.\n";
  }
  for (const auto& p : parts) out << "[" << p.label << "] " << command_line(p) << "\n";
  if (scheduled)
    out << "# sync.schedule " << config.sync.schedule
        << ": `loco launch` starts and stops the listed workers as it says\n";
}

}  // namespace loco::launcher

// Watching a run live (docs/status.md): `loco status HOST:PORT [--watch [S]]`, which asks a
// coordinator's Status RPC with the secret and TLS options a worker takes and prints a compact
// table; and the JSON form of a status that the coordinator's status page
// (sync.coordinator.status_address) serves as /status.json and draws in the browser.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <iosfwd>
#include <string>
#include <vector>

#include "loco/protocol.h"

namespace loco {

// What a member is doing: "training" (no push for this round yet), "pushed" (its update is in,
// it waits for the round to close) or "pushed state" (its full parameters for a demo consensus).
const char* member_doing(const MemberInfo& m);

// The status as /status.json serves it: round, total_rounds, mode, wall_s, tokens, bytes_up,
// bytes_down, last_val_loss (null before the first evaluation), members [{worker_id, name, shard,
// doing, last_loss, bytes_up, bytes_down, seen_s_ago}], train_losses and val_losses
// ([[round, loss], ...]).
nlohmann::json status_json(const CoordinatorStatus& s);

// The compact table `loco status` prints: one line for the run, one per member.
std::string status_table(const CoordinatorStatus& s, const std::string& address);

struct StatusOptions {
  std::string address;  // HOST:PORT of the coordinator's gRPC service
  double watch_s = 0;   // > 0: print again every watch_s seconds until the coordinator is gone
  bool json = false;    // print status_json instead of the table
  // As a worker takes them (sync.coordinator.secret_file, tls.ca/cert/key): from --config's
  // sync.coordinator, then the flags over it.
  std::string config_path;
  std::string secret_file, tls_ca, tls_cert, tls_key;
};

// `loco status`: prints to `out`; returns the exit code. Throws std::runtime_error with one line
// naming the address when the coordinator cannot be reached or refuses the request (the first
// time; once watching, the coordinator going away ends the watch with exit code 0). `stop` ends
// a watch early (Ctrl-C).
int run_status(const StatusOptions& options, const std::atomic<bool>& stop, std::ostream& out);

}  // namespace loco

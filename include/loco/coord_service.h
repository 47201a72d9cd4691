// `loco coordinator`: the CoordinatorCore behind a real gRPC server, with the standard health
// service and server reflection (so grpcurl / grpc_cli can talk to it). With sync.coordinator's
// secret_file every Coordinator RPC must carry the shared secret (UNAUTHENTICATED otherwise);
// with tls.cert/key it serves TLS, and with tls.ca it requires client certificates
// (docs/security.md).
#pragma once

#include <atomic>
#include <string>

#include "loco/config.h"
#include "loco/protocol.h"

namespace loco {

// Serves until the last round is done and every worker left, or `stop` becomes true.
// Returns the process exit code.
// `pause` (SIGUSR1 in `loco coordinator`): once set, the run ends after the round now open
// (CoordinatorCore::pause).
int run_coordinator(const Config& config, bool resume, const std::atomic<bool>& stop,
                    const std::atomic<bool>* pause = nullptr);

}  // namespace loco

// The coordinator channel's security (docs/security.md): gRPC credentials for TLS from the
// sync.coordinator.tls files, and the shared secret that every RPC carries as metadata. Private
// to src/coord: gRPC stays out of include/.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <string>
#include <string_view>

#include "loco/config.h"

namespace loco {

// The metadata a call carries the secret in: "authorization: Bearer <secret>", what grpcurl's
// -H and most proxies understand.
constexpr char kSecretMetadata[] = "authorization";
std::string bearer(const std::string& secret);

// The coordinator's credentials: TLS with tls.cert and tls.key when set (and, when tls.ca is set
// too, client certificates required and verified against it), plaintext otherwise. Throws
// ConfigError when tls.ca is set without a certificate of its own.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const CoordinatorConfig& config);

// A worker's credentials: TLS when tls.ca or tls.cert is set (trusting tls.ca, or the system's
// roots without it; presenting tls.cert/tls.key when set), plaintext otherwise.
std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const CoordinatorConfig& config);

// Whether a call carried the expected secret. Compares in time that does not depend on where the
// values differ. An empty `expected` (no secret configured) accepts every call.
enum class SecretCheck { kOk, kMissing, kWrong };
SecretCheck check_secret(const grpc::ServerContext& ctx, const std::string& expected_bearer);
bool same_secret(std::string_view a, std::string_view b);

}  // namespace loco

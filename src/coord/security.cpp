// TLS credentials and the shared-secret check of the coordinator channel (see security.h).
#include "security.h"

#include <grpcpp/security/server_credentials.h>

namespace loco {

std::string bearer(const std::string& secret) {
  return "Bearer " + secret;
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const CoordinatorConfig& config) {
  if (config.tls_cert.empty()) {
    if (!config.tls_ca.empty())
      throw ConfigError(
          "sync.coordinator.tls.ca is set but tls.cert and tls.key are not: the coordinator needs "
          "its own certificate to serve TLS");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back(
      {read_config_file("sync.coordinator.tls.key", config.tls_key),
       read_config_file("sync.coordinator.tls.cert", config.tls_cert)});
  if (!config.tls_ca.empty()) {
    options.pem_root_certs = read_config_file("sync.coordinator.tls.ca", config.tls_ca);
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const CoordinatorConfig& config) {
  if (config.tls_ca.empty() && config.tls_cert.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!config.tls_ca.empty())
    options.pem_root_certs = read_config_file("sync.coordinator.tls.ca", config.tls_ca);
  if (!config.tls_cert.empty()) {
    options.pem_cert_chain = read_config_file("sync.coordinator.tls.cert", config.tls_cert);
    options.pem_private_key = read_config_file("sync.coordinator.tls.key", config.tls_key);
  }
  return grpc::SslCredentials(options);
}

bool same_secret(std::string_view a, std::string_view b) {
  // Touches every byte of the longer value whatever the contents; only the lengths leak.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

SecretCheck check_secret(const grpc::ServerContext& ctx, const std::string& expected_bearer) {
  if (expected_bearer.empty()) return SecretCheck::kOk;
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find(kSecretMetadata);
  if (it == metadata.end()) return SecretCheck::kMissing;
  const std::string_view given(it->second.data(), it->second.size());
  return same_secret(given, expected_bearer) ? SecretCheck::kOk : SecretCheck::kWrong;
}

}  // namespace loco

// The coordinator's live status page over HTTP(S) with cpp-httplib (see status_page.h).
#include "status_page.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <chrono>

#include "loco/status.h"
#include "security.h"

namespace loco {
namespace {

// Whether a request carries the secret: `?token=` or `Authorization: Bearer`.
bool authorized(const httplib::Request& req, const std::string& secret) {
  if (secret.empty()) return true;
  if (req.has_param("token") && same_secret(req.get_param_value("token"), secret)) return true;
  return same_secret(req.get_header_value("Authorization"), bearer(secret));
}

// The page with the status as of now in place of STATUS_JSON, every '<' escaped so that nothing in
// it can end the <script> element it sits in.
std::string page_with(const CoordinatorStatus& s) {
  std::string json = status_json(s).dump(), safe;
  for (char ch : json) {
    if (ch == '<')
      safe += "\\u003c";  // '<' occurs only inside JSON strings, where this is the same text
    else
      safe += ch;
  }
  std::string page = status_page_html();
  page.replace(page.find("STATUS_JSON"), 11, safe);
  return page;
}

std::unique_ptr<httplib::Server> make_server(const CoordinatorConfig& co) {
  if (co.tls_cert.empty()) return std::make_unique<httplib::Server>();
  auto server = std::make_unique<httplib::SSLServer>(
      co.tls_cert.c_str(), co.tls_key.c_str(), co.tls_ca.empty() ? nullptr : co.tls_ca.c_str());
  if (!server->is_valid())
    throw ConfigError("sync.coordinator.status_address: cannot serve HTTPS with tls.cert '" +
                      co.tls_cert + "' and tls.key '" + co.tls_key + "'");
  return server;
}

}  // namespace

StatusPage::StatusPage(const CoordinatorConfig& co, const std::string& secret,
                       std::function<CoordinatorStatus()> status)
    : server_(make_server(co)) {
  auto& s = *server_;
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };  // a browser or two, not a crowd
  // SO_REUSEADDR (a restart binds at once) but not httplib's default SO_REUSEPORT, with which a
  // second process could bind the same port and take half of the page's requests.
  s.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.set_read_timeout(5, 0);
  s.set_write_timeout(5, 0);
  const char* refusal =
      "401 unauthorized: this page needs the run's shared secret (sync.coordinator.secret_file) "
      "as ?token=SECRET or an Authorization: Bearer SECRET header\n";
  auto guard = [secret, refusal](const httplib::Request& req, httplib::Response& res) {
    if (authorized(req, secret)) return true;
    res.status = 401;
    res.set_content(refusal, "text/plain; charset=utf-8");
    spdlog::warn("coordinator: refused status page request {} from {}: missing or wrong secret",
                 req.path, req.remote_addr);
    return false;
  };
  s.Get("/", [guard, status](const httplib::Request& req, httplib::Response& res) {
    if (!guard(req, res)) return;
    res.set_header("Cache-Control", "no-store");
    res.set_content(page_with(status()), "text/html; charset=utf-8");
  });
  s.Get("/status.json", [guard, status](const httplib::Request& req, httplib::Response& res) {
    if (!guard(req, res)) return;
    res.set_header("Cache-Control", "no-store");
    res.set_content(status_json(status()).dump(), "application/json");
  });
  const std::string& address = co.status_address;
  const std::string host = status_host(address);
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  if (!s.bind_to_port(host, port))
    throw ConfigError("sync.coordinator.status_address: cannot listen on " + address +
                      " (port in use or bad address)");
  thread_ = std::thread([&s] { s.listen_after_bind(); });
  // stop() before the loop runs would leave it running: wait for it (it starts at once).
  for (int i = 0; i < 500 && !s.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  spdlog::info("coordinator: status page at {}://{}/{}", co.tls_cert.empty() ? "http" : "https",
               address, secret.empty() ? "" : " (needs ?token=SECRET)");
}

StatusPage::~StatusPage() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace loco

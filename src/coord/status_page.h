// The coordinator's live status page (sync.coordinator.status_address; docs/status.md), served
// with cpp-httplib on a thread pool of its own: `GET /` the HTML page (self-contained; it fetches
// /status.json every 2 s and redraws members, round, bytes and the loss curve) and
// `GET /status.json` (include/loco/status.h's status_json). With a shared secret both need it, as
// `?token=SECRET` or `Authorization: Bearer SECRET` (401 otherwise); with tls.cert/key the page is
// HTTPS with the coordinator's certificate (and, with tls.ca, asks for a client certificate).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "loco/config.h"
#include "loco/protocol.h"

namespace httplib {
class Server;
}

namespace loco {

// The HTML of the page (src/coord/status_html.cpp).
const char* status_page_html();

class StatusPage {
 public:
  // Starts serving at co.status_address; throws ConfigError naming the key when it cannot
  // listen there. `status` is called for every /status.json, from the server's threads.
  StatusPage(const CoordinatorConfig& co, const std::string& secret,
             std::function<CoordinatorStatus()> status);
  ~StatusPage();  // stops the server and waits for its threads

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace loco

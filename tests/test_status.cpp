// Watching a run live (docs/status.md): sync.coordinator.status_address's validation, the status
// JSON and its curves, the page's server alone; then against a real `loco launch`: `loco status`
// (the table, --json, a missing or wrong secret, an unreachable address, --watch until the
// coordinator is gone), the page's guard and JSON, and the page in Debian's headless chromium.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "coord/status_page.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "loco/status.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;
using loco::testing::config_error;
using loco::testing::logged_round;
using loco::testing::process_config;
using loco::testing::read_text;
using loco::testing::run_command;
using loco::testing::run_loco;
using loco::testing::temp_dir;
using loco::testing::wait_until;
using loco::testing::write_config;

namespace {

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

// Lines of `text` that are not empty.
size_t line_count(const std::string& text) {
  size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// The exit code of `pid` once it exits within `timeout_s`; -1 (and the process killed) if not.
int exit_within(pid_t pid, double timeout_s) {
  int status = 0;
  if (wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout_s))
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// Interrupts a spawned process that is still running when a failed assertion leaves the test.
struct InterruptOnExit {
  pid_t pid;
  ~InterruptOnExit() {
    if (pid > 0 && ::kill(pid, SIGINT) == 0) exit_within(pid, 60);
  }
};

bool have_chromium() {
  return run_command("command -v chromium").exit_code == 0;
}

// Headless chromium on `url` with `what` (--dump-dom or --screenshot=FILE); its stdout.
loco::testing::CommandResult chromium(const std::string& dir, const std::string& what,
                                      const std::string& url) {
  return run_command(
      "(timeout 180 chromium --headless --no-sandbox --disable-gpu "
      "--disable-dev-shm-usage --user-data-dir=" +
      dir + "/chromium-profile --window-size=1100,820 --virtual-time-budget=5000 " + what + " '" +
      url + "' 2>>" + dir + "/chromium.err)");
}

}  // namespace

TEST(StatusConfig, StatusAddressNeedsHostPortAndASecretOffLoopback) {
  const std::string dir = temp_dir();
  Config c = process_config(dir + "/run", 2, 2, 2);
  auto error_with = [&](const std::string& address, const std::string& secret_file) {
    Config x = c;
    x.sync.coordinator.status_address = address;
    x.sync.coordinator.secret_file = secret_file;
    return config_error([&] { validate(x); });
  };
  const std::string secret = write_file(dir + "/secret", "s3cret\n");
  for (const std::string ok : {"", "127.0.0.1:8080", "localhost:1", "[::1]:65535"})
    EXPECT_EQ(error_with(ok, ""), "(no error)") << ok;
  EXPECT_EQ(error_with("0.0.0.0:8080", secret), "(no error)");
  EXPECT_EQ(error_with("10.1.2.3:8080", secret), "(no error)");
  for (const std::string bad : {"8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                                "127.0.0.1:80a", ":8080"}) {
    std::string m = error_with(bad, "");
    EXPECT_NE(m.find("sync.coordinator.status_address: '" + bad + "' is not HOST:PORT"),
              std::string::npos)
        << m;
  }
  for (const std::string open : {"0.0.0.0:8080", "192.168.1.5:80", "example.org:8080"}) {
    std::string m = error_with(open, "");
    EXPECT_NE(m.find("sync.coordinator.status_address: '" + open + "' is not a loopback"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("sync.coordinator.secret_file"), std::string::npos) << m;
  }
  EXPECT_EQ(status_host("[::1]:80"), "::1");
  EXPECT_TRUE(is_loopback_host("127.0.0.2"));
  EXPECT_FALSE(is_loopback_host("128.0.0.1"));
}

// `loco launch` with a public status page and no secret: one line naming the key, and nothing
// of the run written.
TEST(StatusConfig, LaunchRefusesAPublicPageWithoutTheSecret) {
  const std::string dir = temp_dir();
  Config c = process_config(dir + "/run", 2, 2, 2);
  c.sync.coordinator.status_address = "0.0.0.0:" + std::to_string(loco::free_port());
  auto r = run_loco("launch --config " + write_config(dir, c));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(line_count(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("sync.coordinator.status_address"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/run")) << r.output;
}

TEST(StatusJson, MembersDoingAndCurves) {
  CoordinatorStatus s;
  s.round = 3, s.total_rounds = 10, s.mode = "diloco", s.tokens = 1234;
  MemberInfo a, b, c;
  a.worker_id = "w0", a.name = "<b>x</b>";
  b.worker_id = "w1", b.reported = true, b.last_loss = 4.5;
  c.worker_id = "w2", c.reported_state = true;
  s.members = {a, b, c};
  EXPECT_EQ(status_json(s)["last_val_loss"], nullptr);  // not evaluated yet
  s.train_losses = {{1, 6.0}, {2, 5.5}, {3, 5.0}};
  s.val_losses = {{2, 5.7}};
  s.last_val_loss = 5.7;
  auto j = status_json(s);
  EXPECT_EQ(j["round"], 3);
  EXPECT_EQ(j["last_val_loss"], 5.7);
  EXPECT_EQ(j["members"][0]["doing"], "training");
  EXPECT_EQ(j["members"][1]["doing"], "pushed");
  EXPECT_EQ(j["members"][2]["doing"], "pushed state");
  EXPECT_EQ(j["members"][0]["name"], "<b>x</b>");
  EXPECT_EQ(j["train_losses"][2], nlohmann::json({3, 5.0}));
  std::string table = status_table(s, "h:1");
  EXPECT_NE(table.find("round 3/10"), std::string::npos) << table;
  EXPECT_NE(table.find("val loss 5.7000"), std::string::npos) << table;
  EXPECT_EQ(line_count(table), 2u + 3u) << table;  // the run, the header, one per member

  // A long run's curve is thinned, keeping its first and newest points.
  std::vector<LossPoint> curve;
  for (int64_t r = 1; r <= 5000; ++r) append_loss_point(curve, {r, double(r)});
  EXPECT_LE(curve.size(), kMaxCurvePoints);
  EXPECT_GT(curve.size(), kMaxCurvePoints / 2);
  EXPECT_EQ(curve.front().round, 1);
  EXPECT_EQ(curve.back().round, 5000);
  for (size_t i = 1; i < curve.size(); ++i) EXPECT_LT(curve[i - 1].round, curve[i].round);
}

// The page's server alone: the secret's two forms, the page with the status in it (escaped),
// and a port in use refused with the key's name.
TEST(StatusPageServer, GuardsWithTheSecretAndRefusesAPortInUse) {
  CoordinatorConfig co;
  const int port = loco::free_port();
  co.status_address = "127.0.0.1:" + std::to_string(port);
  CoordinatorStatus s;
  s.round = 7, s.total_rounds = 9;
  MemberInfo m;
  m.worker_id = "w0", m.name = "</script><b>";
  s.members = {m};
  {
    StatusPage page(co, "s3cret", [&] { return s; });
    httplib::Client http("127.0.0.1", port);
    for (const std::string path : {"/", "/status.json", "/status.json?token=wrong"}) {
      auto r = http.Get(path.c_str());
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 401) << path;
      EXPECT_NE(r->body.find("sync.coordinator.secret_file"), std::string::npos);
    }
    auto j = http.Get("/status.json?token=s3cret");
    ASSERT_TRUE(j);
    ASSERT_EQ(j->status, 200);
    EXPECT_EQ(nlohmann::json::parse(j->body)["round"], 7);
    auto html = http.Get("/", {{"Authorization", "Bearer s3cret"}});
    ASSERT_TRUE(html);
    ASSERT_EQ(html->status, 200);
    EXPECT_NE(html->body.find("\"round\":7"), std::string::npos);
    EXPECT_EQ(html->body.find("</script><b>"), std::string::npos);  // escaped in the page
    EXPECT_NE(html->body.find("\\u003c/script>\\u003cb>"), std::string::npos);
    std::string m2 = config_error([&] { StatusPage again(co, "", [&] { return s; }); });
    EXPECT_NE(m2.find("sync.coordinator.status_address: cannot listen on " + co.status_address),
              std::string::npos)
        << m2;
  }
  // Stopped with its owner: the port is free again.
  httplib::Client http("127.0.0.1", port);
  EXPECT_FALSE(http.Get("/status.json"));
}

// With tls.cert/key the page is HTTPS with the coordinator's certificate: a client that trusts
// the CA gets the JSON, plain HTTP on the same port gets nothing.
TEST(StatusPageServer, ServesHttpsWithTheCoordinatorsCertificate) {
  const std::string dir = temp_dir();
  auto made = run_command(std::string(LOCO_SOURCE_DIR) + "/scripts/make_test_ca.sh " + dir);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  CoordinatorConfig co;
  const int port = loco::free_port();
  co.status_address = "127.0.0.1:" + std::to_string(port);
  co.tls_cert = dir + "/server.pem", co.tls_key = dir + "/server.key";
  CoordinatorStatus s;
  s.round = 5;
  StatusPage page(co, "", [&] { return s; });
  httplib::SSLClient https("127.0.0.1", port);
  https.set_ca_cert_path((dir + "/ca.pem").c_str());
  https.enable_server_certificate_verification(true);
  auto r = https.Get("/status.json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(nlohmann::json::parse(r->body)["round"], 5);
  httplib::Client plain("127.0.0.1", port);
  plain.set_read_timeout(2, 0);
  auto p = plain.Get("/status.json");
  EXPECT_TRUE(!p || p->status != 200);
  co.tls_key = dir + "/rogue.key";  // not the certificate's key
  std::string m = config_error([&] { StatusPage bad(co, "", [&] { return s; }); });
  EXPECT_NE(m.find("sync.coordinator.status_address: cannot serve HTTPS"), std::string::npos) << m;
}

// One live launch (2 workers, rounds of 2 steps, a shared secret, the page on loopback), stopped
// with SIGINT once everything was checked.
TEST(StatusLaunch, CommandPageAndBrowserOnALiveRun) {
  const std::string dir = temp_dir();
  Config c = process_config(dir + "/run", 2, 3000, 2);
  c.sync.coordinator.checkpoint_every = 3000;
  const std::string secret = "page-secret-42";
  c.sync.coordinator.secret_file = write_file(dir + "/secret", secret + "\n");
  const int page_port = loco::free_port();
  c.sync.coordinator.status_address = "127.0.0.1:" + std::to_string(page_port);
  const std::string address = c.sync.coordinator.address;
  pid_t launch = loco::testing::spawn_shell(
      std::string(LOCO_BINARY) + " launch --config " + write_config(dir, c), dir + "/launch.log");
  InterruptOnExit stop_launch{launch};
  const std::string metrics = dir + "/run/coordinator/metrics.jsonl";
  ASSERT_TRUE(wait_until([&] { return logged_round(metrics) >= 2; }, 180))
      << read_text(dir + "/launch.log");
  pid_t watch = loco::testing::spawn_shell(std::string(LOCO_BINARY) + " status " + address +
                                               " --watch 0.5 --secret-file " + dir + "/secret",
                                           dir + "/watch.log");
  InterruptOnExit stop_watch{watch};

  // The table: the round, both members, the mode.
  auto r = run_loco("status " + address + " --secret-file " + dir + "/secret");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch round;
  ASSERT_TRUE(std::regex_search(r.output, round, std::regex("round (\\d+)/3000"))) << r.output;
  EXPECT_GE(std::stoll(round[1]), 2) << r.output;
  for (const std::string word : {"diloco", " w0 ", " w1 ", "training"})
    EXPECT_NE(r.output.find(word), std::string::npos) << word << " in\n" << r.output;
  auto j = run_loco("status " + address + " --json --secret-file " + dir + "/secret");
  ASSERT_EQ(j.exit_code, 0) << j.output;
  auto status = nlohmann::json::parse(j.output);
  EXPECT_EQ(status["members"].size(), 2u);
  EXPECT_FALSE(status["train_losses"].empty());

  // A missing or wrong secret, an unreachable address: one line naming the address.
  auto none = run_loco("status " + address);
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_EQ(line_count(none.output), 1u) << none.output;
  EXPECT_NE(none.output.find("coordinator at " + address +
                             " refused the status request: it "
                             "wants the shared secret"),
            std::string::npos)
      << none.output;
  auto wrong =
      run_loco("status " + address + " --secret-file " + write_file(dir + "/wrong", "not-it\n"));
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_EQ(line_count(wrong.output), 1u) << wrong.output;
  EXPECT_NE(wrong.output.find("wrong shared secret"), std::string::npos) << wrong.output;
  const std::string nobody = "127.0.0.1:" + std::to_string(loco::free_port());
  auto gone = run_loco("status " + nobody);
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(line_count(gone.output), 1u) << gone.output;
  EXPECT_NE(gone.output.find("coordinator at " + nobody + " unreachable"), std::string::npos)
      << gone.output;

  // The page's JSON, with the secret only.
  httplib::Client http("127.0.0.1", page_port);
  auto refused = http.Get("/status.json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  auto page_json = http.Get(("/status.json?token=" + secret).c_str());
  ASSERT_TRUE(page_json);
  ASSERT_EQ(page_json->status, 200);
  auto pj = nlohmann::json::parse(page_json->body);
  const int64_t round_before = pj["round"].get<int64_t>();
  EXPECT_GE(round_before, 2);
  EXPECT_EQ(pj["total_rounds"], 3000);
  EXPECT_EQ(pj["members"].size(), 2u);

  // The page in a real browser: it loads, shows the live round and the members, refreshes
  // itself (status.json with the page's token: "live", not "not answering"), and a screenshot.
  if (have_chromium()) {
    const std::string url = "http://127.0.0.1:" + std::to_string(page_port) + "/?token=" + secret;
    auto dom = chromium(dir, "--dump-dom", url);
    ASSERT_EQ(dom.exit_code, 0) << dom.output << read_text(dir + "/chromium.err");
    std::smatch shown;
    ASSERT_TRUE(std::regex_search(dom.output, shown, std::regex("<b id=\"round\">(\\d+)</b>")))
        << dom.output;
    EXPECT_GE(std::stoll(shown[1]), round_before) << dom.output;
    EXPECT_NE(dom.output.find("<b id=\"total\">3000</b>"), std::string::npos);
    EXPECT_NE(dom.output.find("<td>w0</td>"), std::string::npos) << dom.output;
    EXPECT_NE(dom.output.find("<td>w1</td>"), std::string::npos) << dom.output;
    EXPECT_NE(dom.output.find("<polyline"), std::string::npos);  // the loss curve
    EXPECT_NE(dom.output.find("<span id=\"state\" class=\"\">live"), std::string::npos)
        << dom.output;
    auto shot = chromium(dir, "--screenshot=" + dir + "/status.png", url);
    EXPECT_EQ(shot.exit_code, 0) << shot.output;
    EXPECT_EQ(read_text(dir + "/status.png").substr(0, 8), "\x89PNG\r\n\x1a\n");
    EXPECT_GT(fs::file_size(dir + "/status.png"), 10000u);
  }

  // Stopped: the watch saw rounds go by, then says the coordinator is gone and exits 0.
  ::kill(launch, SIGINT);
  stop_launch.pid = -1;
  EXPECT_EQ(exit_within(launch, 120), 130) << read_text(dir + "/launch.log");
  stop_watch.pid = -1;
  EXPECT_EQ(exit_within(watch, 30), 0) << read_text(dir + "/watch.log");
  std::string watched = read_text(dir + "/watch.log");
  EXPECT_NE(watched.find("coordinator at " + address + " is gone"), std::string::npos) << watched;
  const std::regex round_re("round (\\d+)/3000");
  std::sregex_iterator it(watched.begin(), watched.end(), round_re), end;
  std::set<std::string> rounds;
  for (; it != end; ++it) rounds.insert((*it)[1]);
  EXPECT_GE(rounds.size(), 2u) << watched;  // it refreshed while rounds closed
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed: the browser part was skipped";
}

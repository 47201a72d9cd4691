// Tests of the coordinator channel's security (docs/security.md): config validation of the secret
// and TLS files, the shared secret on every RPC against a real in-process server, TLS with client
// certificates from a throwaway CA (scripts/make_test_ca.sh), and a real `loco launch` with both.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "loco.grpc.pb.h"
#include "loco/checkpoint.h"
#include "loco/codec.h"
#include "loco/coord_client.h"
#include "loco/coord_service.h"
#include "loco/coordinator.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "loco/optim.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace loco;

namespace {

Config small_config(const std::string& dir) {
  Config c;
  merge_yaml(c, loco::testing::small_run_yaml(dir), "test");
  c.sync.mode = Mode::kDiloco;
  c.sync.workers = 1;
  c.sync.inner_steps = 2;
  c.train.max_steps = 2;  // one round
  c.sync.coordinator.address = "127.0.0.1:" + std::to_string(loco::testing::free_port());
  return c;
}

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(accepted)";
}

// The certificates of scripts/make_test_ca.sh in `dir`.
void make_test_ca(const std::string& dir) {
  auto r =
      loco::testing::run_command(std::string(LOCO_SOURCE_DIR) + "/scripts/make_test_ca.sh " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// Everything the coordinator logs while alive, kept in memory.
struct LogCapture {
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink =
      std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  LogCapture() { spdlog::default_logger()->sinks().push_back(sink); }
  ~LogCapture() { spdlog::default_logger()->sinks().pop_back(); }
  std::string text() const {
    std::string out;
    for (const auto& line : sink->last_formatted()) out += line;
    return out;
  }
};

// A whole, valid zero update pushed straight through the generated stub, claiming to be `worker`
// and carrying `bearer` (none when empty) as the secret: what an intruder who knows a worker's id
// could send.
grpc::Status raw_push(const std::string& address, const std::vector<TensorLayout>& layout,
                      const std::string& worker, const std::string& bearer) {
  auto stub =
      v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!bearer.empty()) ctx.AddMetadata("authorization", bearer);
  v1::PushReply reply;
  auto writer = stub->PushUpdate(&ctx, &reply);
  auto codec = make_codec(CodecConfig{});
  std::vector<std::string> payloads;
  for (const auto& l : layout) payloads.push_back(codec->encode(torch::zeros(l.shape)).payload);
  v1::UpdateChunk head;
  auto* h = head.mutable_header();
  h->set_worker_id(worker);
  h->set_round(0);
  h->set_tokens(8);
  h->set_loss(1.0);
  h->set_kind(v1::DELTA);
  for (size_t i = 0; i < layout.size(); ++i) {
    const auto& l = layout[i];
    auto* spec = h->add_tensors();
    spec->set_name(l.name);
    for (int64_t d : l.shape) spec->add_shape(d);
    spec->set_dtype("float32");
    spec->set_codec("none");
    spec->set_payload_bytes(payloads[i].size());
  }
  bool ok = writer->Write(head);
  for (size_t i = 0; ok && i < layout.size(); ++i) {
    const std::string& p = payloads[i];
    for (size_t off = 0; ok && off < p.size(); off += kChunkBytes) {
      v1::UpdateChunk data;
      data.mutable_data()->set_tensor(uint32_t(i));
      data.mutable_data()->set_offset(off);
      data.mutable_data()->set_data(p.substr(off, kChunkBytes));
      ok = writer->Write(data);
    }
  }
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status raw_status(const std::string& address, const std::string& bearer,
                        v1::StatusReply* reply) {
  auto stub =
      v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!bearer.empty()) ctx.AddMetadata("authorization", bearer);
  return stub->Status(&ctx, v1::StatusRequest(), reply);
}

// run_coordinator on a thread; stops it (if it has not stopped by itself) when it goes, so that a
// failed assertion does not leave a server behind.
struct ServerThread {
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit ServerThread(const Config& c)
      : thread([this, &c] { run_coordinator(c, false, stop); }) {}
  ~ServerThread() { wait(); }
  void wait() {
    if (!thread.joinable()) return;
    if (::testing::Test::HasFailure()) stop = true;
    thread.join();
  }
};

std::string write_yaml(const std::string& dir, const Config& c) {
  std::string path = dir + "/config.yaml";
  std::ofstream(path) << to_yaml(c);
  return path;
}

}  // namespace

TEST(SecurityConfig, ValidatesTheSecretAndTlsFilesNamingTheKey) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run");
  auto refusal = [&](const Config& bad) { return message_of([&] { validate(bad); }); };
  EXPECT_EQ(refusal(c), "(accepted)");

  Config missing = c;
  missing.sync.coordinator.secret_file = dir + "/nope";
  EXPECT_NE(refusal(missing).find("sync.coordinator.secret_file"), std::string::npos);
  Config blank = c;
  blank.sync.coordinator.secret_file = write_file(dir + "/blank", "  \n");
  EXPECT_NE(refusal(blank).find("sync.coordinator.secret_file"), std::string::npos);
  Config binary = c;
  binary.sync.coordinator.secret_file = write_file(dir + "/binary", std::string("a\x01z", 3));
  EXPECT_NE(refusal(binary).find("printable"), std::string::npos);
  Config good = c;
  good.sync.coordinator.secret_file = write_file(dir + "/good", "s3cret\n");
  EXPECT_EQ(refusal(good), "(accepted)");
  EXPECT_EQ(read_secret(dir + "/good"), "s3cret");  // the trailing newline is not part of it

  make_test_ca(dir + "/ca");
  Config cert_only = c;
  cert_only.sync.coordinator.tls_cert = dir + "/ca/server.pem";
  EXPECT_NE(refusal(cert_only).find("cert and key go together"), std::string::npos);
  Config no_ca = c;
  no_ca.sync.coordinator.tls_cert = dir + "/ca/server.pem";
  no_ca.sync.coordinator.tls_key = dir + "/ca/server.key";
  no_ca.sync.coordinator.tls_ca = dir + "/ca/missing.pem";
  EXPECT_NE(refusal(no_ca).find("sync.coordinator.tls.ca"), std::string::npos);
  no_ca.sync.coordinator.tls_ca = dir + "/ca/ca.pem";
  EXPECT_EQ(refusal(no_ca), "(accepted)");
}

TEST(Security, SecretIsRequiredOnEveryRpcAndRefusalsChangeNothing) {
  std::string dir = loco::testing::temp_dir();
  Config c = small_config(dir + "/run");
  const std::string secret = "correct-horse-battery", wrong = "not-the-secret-at-all";
  c.sync.coordinator.secret_file = write_file(dir + "/secret", secret + "\n");
  c.sync.coordinator.connect_timeout_s = 5;
  const std::string& address = c.sync.coordinator.address;
  LogCapture log;
  ServerThread server(c);

  CoordinatorClient good(address, c.sync.coordinator);
  JoinInfo join = good.join("good", GPT(c.model)->num_params());

  CoordinatorConfig none = c.sync.coordinator, bad = c.sync.coordinator;
  none.secret_file = "";
  bad.secret_file = write_file(dir + "/wrong", wrong);
  for (const auto& co : {none, bad}) {
    CoordinatorClient intruder(address, co);
    std::string m = message_of([&] { intruder.join("intruder", 1); });
    EXPECT_NE(m.find("UNAUTHENTICATED"), std::string::npos) << m;
    EXPECT_NE(m.find("shared secret"), std::string::npos) << m;
  }
  // With the secret, fields are still checked before they touch the membership.
  for (const std::string& name : {std::string("two\nlines"), std::string(200, 'a')}) {
    CoordinatorClient odd(address, c.sync.coordinator);
    std::string m = message_of([&] { odd.join(name, GPT(c.model)->num_params()); });
    EXPECT_NE(m.find("INVALID_ARGUMENT"), std::string::npos) << m;
  }
  auto layout = loco::testing::model_layout(c);
  for (const std::string& bearer : {std::string(), "Bearer " + wrong, "Bearer " + secret + "x"}) {
    grpc::Status s = raw_push(address, layout, join.worker_id, bearer);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bearer;
  }
  v1::StatusReply status;
  EXPECT_EQ(raw_status(address, "", &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(raw_status(address, "Bearer " + secret, &status).ok());
  EXPECT_EQ(status.round(), 0);         // no intruder's push closed the round
  EXPECT_EQ(status.members_size(), 1);  // no intruder joined
  EXPECT_FALSE(status.members(0).reported());

  // The same push with the secret is accepted: the refusals above were the secret's doing.
  EXPECT_TRUE(raw_push(address, layout, join.worker_id, "Bearer " + secret).ok());
  auto pulled = torch::empty({layout.back().offset + layout.back().numel});
  EXPECT_EQ(good.pull(1, layout, pulled, 30).round, 1);
  good.leave();
  server.wait();
  EXPECT_FALSE(loco::list_checkpoints(dir + "/run/checkpoints").empty());

  // Who was refused, which RPC and why, never the secret nor what was sent instead.
  std::string text = log.text();
  EXPECT_NE(text.find("refused Join from ipv4:127.0.0.1"), std::string::npos) << text;
  EXPECT_NE(text.find("refused PushUpdate from ipv4:127.0.0.1"), std::string::npos) << text;
  EXPECT_NE(text.find("missing shared secret"), std::string::npos) << text;
  EXPECT_NE(text.find("wrong shared secret"), std::string::npos) << text;
  EXPECT_EQ(text.find(secret), std::string::npos) << text;
  EXPECT_EQ(text.find(wrong), std::string::npos) << text;
}

TEST(Security, TlsRefusesPlaintextUntrustedAndCertlessClients) {
  std::string dir = loco::testing::temp_dir();
  make_test_ca(dir + "/ca");
  const std::string ca = dir + "/ca/";
  Config c = small_config(dir + "/run");
  auto& co = c.sync.coordinator;
  co.tls_cert = ca + "server.pem", co.tls_key = ca + "server.key", co.tls_ca = ca + "ca.pem";
  co.connect_timeout_s = 1.5;  // a refused handshake looks like an unreachable coordinator
  ServerThread server(c);

  CoordinatorConfig worker = co;
  worker.tls_cert = ca + "client.pem", worker.tls_key = ca + "client.key";
  CoordinatorClient good(co.address, worker);
  auto layout = loco::testing::model_layout(c);
  JoinInfo join = good.join("good", GPT(c.model)->num_params());
  EXPECT_FALSE(join.worker_id.empty());

  CoordinatorConfig plaintext = worker, certless = worker, rogue = worker, distrusting = worker;
  plaintext.tls_cert = plaintext.tls_key = plaintext.tls_ca = "";
  certless.tls_cert = certless.tls_key = "";
  rogue.tls_cert = ca + "rogue.pem", rogue.tls_key = ca + "rogue.key";  // another CA signed it
  distrusting.tls_ca = ca + "other-ca.pem";  // cannot verify the coordinator's certificate
  for (const auto* bad : {&plaintext, &certless, &rogue, &distrusting}) {
    CoordinatorClient intruder(co.address, *bad);
    std::string m = message_of([&] { intruder.join("intruder", 1); });
    EXPECT_NE(m.find("unreachable"), std::string::npos) << m;
    if (bad != &plaintext) EXPECT_NE(m.find("sync.coordinator.tls"), std::string::npos) << m;
  }

  // The good worker's round goes on undisturbed.
  Update u;
  u.round = 0, u.tokens = 8;
  auto codec = make_codec(CodecConfig{});
  for (const auto& l : layout)
    u.tensors.push_back({l.name, "float32", codec->encode(torch::zeros(l.shape))});
  EXPECT_GT(good.push(u), 0u);
  auto pulled = torch::empty({layout.back().offset + layout.back().numel});
  EXPECT_EQ(good.pull(1, layout, pulled, 30).round, 1);
  good.leave();
  server.wait();
  EXPECT_FALSE(loco::list_checkpoints(dir + "/run/checkpoints").empty());
}

TEST(Security, LaunchedDilocoRunWithSecretAndTlsFinishes) {
  std::string dir = loco::testing::temp_dir();
  make_test_ca(dir + "/ca");
  Config c = small_config(dir + "/run");
  c.sync.workers = 2;
  c.train.max_steps = 4;
  c.train.eval_every = 0;
  const std::string secret = "launch-secret-42";
  auto& co = c.sync.coordinator;
  co.secret_file = write_file(dir + "/secret", secret);
  // One config for every process: the server certificate doubles as the workers' own.
  co.tls_cert = dir + "/ca/server.pem", co.tls_key = dir + "/ca/server.key";
  co.tls_ca = dir + "/ca/ca.pem";
  auto r = loco::testing::run_loco("launch --config " + write_yaml(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("TLS with client certificates, shared secret required"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find(secret), std::string::npos);
  EXPECT_EQ(r.output.find("refused"), std::string::npos) << r.output;
  EXPECT_EQ(read_metrics(dir + "/run/coordinator/metrics.jsonl").size(), 2u);  // 4 steps / H = 2
}

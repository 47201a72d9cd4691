// The worker's gRPC client for the coordinator (see include/loco/coord_client.h).
#include "loco/coord_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "loco.grpc.pb.h"
#include "loco/link.h"
#include "security.h"
#include "stream.h"

namespace loco {
namespace {

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "ERROR";
  }
}

[[noreturn]] void fail(const char* rpc, const grpc::Status& s) {
  RpcError::Code code = RpcError::kOther;
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
      code = RpcError::kUnavailable;
      break;
    case grpc::StatusCode::NOT_FOUND:
      code = RpcError::kNotFound;
      break;
    case grpc::StatusCode::FAILED_PRECONDITION:
      code = RpcError::kFailedPrecondition;
      break;
    default:
      break;
  }
  throw RpcError(code, std::string("coordinator refused ") + rpc + " (" +
                           code_name(s.error_code()) + "): " + s.error_message());
}

std::chrono::system_clock::time_point deadline_in(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(int64_t(std::max(seconds, 0.001) * 1e3));
}

}  // namespace

struct CoordinatorClient::Impl {
  explicit Impl(const LinkConfig& link) : link(link) {}
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;
  std::string bearer;  // the shared secret's metadata value; empty: none configured
  LinkShaper link;     // sync.link in the transport: pushes and pulls paced, latency added

  // Every call carries a deadline and, when configured, the shared secret.
  void prepare(grpc::ClientContext& ctx, double deadline_s) const {
    ctx.set_deadline(deadline_in(deadline_s));
    if (!bearer.empty()) ctx.AddMetadata(kSecretMetadata, bearer);
  }
};

CoordinatorClient::CoordinatorClient(const std::string& address, const CoordinatorConfig& config,
                                     const LinkConfig& link)
    : impl_(std::make_unique<Impl>(link)), config_(config), address_(address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(int(4 * kChunkBytes));
  // Reconnect quickly to a coordinator that (re)starts: gRPC's default backoff grows to 2 min.
  // (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it is also the connect timeout, and a TLS handshake
  // on a loaded machine can take longer than a short backoff.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (!config.secret_file.empty()) impl_->bearer = bearer(read_secret(config.secret_file));
  impl_->channel = grpc::CreateCustomChannel(address, channel_credentials(config), args);
  impl_->stub = v1::Coordinator::NewStub(impl_->channel);
}

CoordinatorClient::~CoordinatorClient() = default;

const nlohmann::json& CoordinatorClient::link_record() const {
  return impl_->link.plan().record;
}

double CoordinatorClient::link_wait_s() const {
  return impl_->link.waited_s();
}

JoinInfo CoordinatorClient::join(const std::string& name, int64_t num_params, int32_t want_shard) {
  if (want_shard >= 0) shard_ = want_shard;
  name_ = name;
  num_params_ = num_params;
  v1::JoinRequest req;
  req.set_name(name);
  req.set_num_params(num_params);
  if (shard_ >= 0) req.set_shard(shard_);  // joining again: the shard this worker reads
  auto start = std::chrono::steady_clock::now();
  double backoff = 0.2;
  const bool tls = !config_.tls_ca.empty() || !config_.tls_cert.empty();
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext ctx;
    impl_->prepare(ctx, 10);
    v1::JoinReply reply;
    grpc::Status s = impl_->stub->Join(&ctx, req, &reply);
    if (s.ok()) {
      worker_id_ = reply.worker_id();
      shard_ = reply.shard();
      JoinInfo info{reply.worker_id(), reply.round(), reply.shard(), reply.num_shards()};
      info.cursor_tokens = reply.cursor_tokens();
      return info;
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)
      fail("Join", s);
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited + backoff > config_.connect_timeout_s)
      throw std::runtime_error(
          "coordinator at " + address_ + " unreachable for " + std::to_string(int(waited)) +
          " s (" + s.error_message() + "); is it running" +
          (tls ? ", and do its TLS settings and this worker's agree (a refused handshake looks "
                 "the same; sync.coordinator.tls)"
               : "") +
          "? (sync.coordinator.connect_timeout_s)");
    spdlog::info("worker: coordinator at {} not reachable yet (attempt {}), retrying in {:.1f} s",
                 address_, attempt, backoff);
    // Waiting on the channel (not sleeping) polls its connection: between calls nothing else
    // does but gRPC's backup poller, every 5 s, so a coordinator that came up a moment after a
    // refused attempt went unnoticed for 5-10 s.
    impl_->channel->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::milliseconds(int64_t(backoff * 1000)));
    backoff = std::min(backoff * 2, 1.0);  // a Join is cheap; come back soon after a restart
  }
}

JoinInfo CoordinatorClient::rejoin() {
  return join(name_, num_params_);
}

CoordinatorStatus CoordinatorClient::status(double timeout_s) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, timeout_s);
  v1::StatusRequest req;
  v1::StatusReply reply;
  grpc::Status s = impl_->stub->Status(&ctx, req, &reply);
  if (!s.ok()) fail("Status", s);
  CoordinatorStatus out;
  out.round = reply.round(), out.total_rounds = reply.total_rounds();
  out.bytes_up = reply.bytes_up(), out.bytes_down = reply.bytes_down();
  out.last_val_loss = reply.last_val_loss();
  out.tokens = reply.tokens();
  out.mode = reply.mode(), out.wall_s = reply.wall_s();
  for (const auto& p : reply.train_losses()) out.train_losses.push_back({p.round(), p.loss()});
  for (const auto& p : reply.val_losses()) out.val_losses.push_back({p.round(), p.loss()});
  for (const auto& m : reply.members()) {
    MemberInfo info;
    info.worker_id = m.worker_id(), info.name = m.name(), info.shard = m.shard();
    info.reported = m.reported(), info.reported_state = m.reported_state();
    info.last_loss = m.last_loss();
    info.bytes_up = m.bytes_up(), info.bytes_down = m.bytes_down();
    info.seen_s_ago = m.seen_s_ago();
    out.members.push_back(info);
  }
  return out;
}

void CoordinatorClient::heartbeat() {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, config_.heartbeat_s * 2);
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id_);
  v1::HeartbeatReply reply;
  grpc::Status s = impl_->stub->Heartbeat(&ctx, req, &reply);
  if (!s.ok()) fail("Heartbeat", s);
}

void CoordinatorClient::set_data_source(std::function<std::pair<int64_t, int64_t>()> stop) {
  std::lock_guard<std::mutex> lock(data_mu_);
  stop_reading_ = std::move(stop);
}

DataLease CoordinatorClient::claim_data(int64_t lease_id, int64_t consumed, int64_t want,
                                        int64_t windows, const std::vector<LeaseRange>& resume,
                                        int64_t round) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, config_.round_timeout_s);
  v1::ClaimRequest req;
  req.set_worker_id(worker_id_);
  req.set_lease_id(lease_id);
  req.set_consumed(consumed);
  req.set_want(want);
  req.set_windows(windows);
  if (round >= 0) req.set_round(round);
  for (const auto& r : resume) {
    auto* out = req.add_resume();
    out->set_epoch(r.epoch), out->set_begin(r.begin), out->set_end(r.end);
  }
  v1::ClaimReply reply;
  grpc::Status s = impl_->stub->ClaimData(&ctx, req, &reply);
  if (!s.ok()) fail("ClaimData", s);
  DataLease lease;
  lease.id = reply.lease_id();
  for (const auto& r : reply.ranges()) lease.ranges.push_back({r.epoch(), r.begin(), r.end()});
  return lease;
}

void CoordinatorClient::leave() {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, 5);
  v1::LeaveRequest req;
  req.set_worker_id(worker_id_);
  {
    std::lock_guard<std::mutex> lock(data_mu_);
    if (stop_reading_) {
      auto [lease_id, consumed] = stop_reading_();
      req.set_lease_id(lease_id);
      req.set_consumed(consumed);
    }
  }
  v1::LeaveReply reply;
  impl_->stub->Leave(&ctx, req, &reply);  // best effort: the lease expires anyway
}

uint64_t CoordinatorClient::push(const Update& update) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, config_.round_timeout_s);
  v1::PushReply reply;
  auto writer = impl_->stub->PushUpdate(&ctx, &reply);
  v1::UpdateChunk chunk;
  fill_update_header(update, chunk.mutable_header());
  chunk.mutable_header()->set_worker_id(worker_id_);
  uint64_t wire = chunk.ByteSizeLong();
  impl_->link.latency();  // the message's one-way latency, once
  // The header, then wait for the coordinator to admit the payload (its initial metadata): a
  // refused push sends nothing more, and one queued behind others holds no buffers meanwhile.
  const bool header_sent = writer->Write(chunk);
  if (header_sent) writer->WaitForInitialMetadata();
  if (header_sent) {
    impl_->link.sent(wire);
    std::vector<std::string_view> payloads;
    for (const auto& t : update.tensors) payloads.emplace_back(t.encoded.payload);
    auto write = [&](const v1::UpdateChunk& m, uint64_t bytes) {
      const bool ok = writer->Write(m);
      impl_->link.sent(bytes);  // paced chunk by chunk as it streams
      return ok;
    };
    write_chunks<v1::UpdateChunk>(payloads, write, &wire);
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) fail("PushUpdate", s);
  return wire;
}

// Runs one PullState call: checks the header's tensors with `check_specs`, then hands every
// data chunk to `sink(tensor, offset, bytes)` after checking it stays inside its tensor.
template <class CheckSpecs, class Sink>
PullResult CoordinatorClient::stream_pull(const PullSpec& spec, CheckSpecs check_specs, Sink sink) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, spec.timeout_s);
  v1::PullRequest req;
  req.set_worker_id(worker_id_);
  req.set_round(spec.round);
  req.set_kind(to_proto(spec.kind));
  req.set_with_velocity(spec.with_velocity);
  auto reader = impl_->stub->PullState(&ctx, req);
  v1::StateChunk chunk;
  PullResult result;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    grpc::Status s = reader->Finish();
    fail("PullState", s.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "no state header") : s);
  }
  result.wire_bytes += chunk.ByteSizeLong();
  // The link starts when the round's state starts flowing, not while the coordinator holds the
  // call: one latency, then every message paced as it arrives.
  impl_->link.latency();
  impl_->link.received(chunk.ByteSizeLong());
  result.round = chunk.header().round();
  result.wait_s = chunk.header().wait_s();
  result.checksum = chunk.header().checksum();
  result.last_round = chunk.header().last_round();
  ChunkAssembler chunks(chunk.header().tensors());
  check_specs(chunk.header());
  while (reader->Read(&chunk)) {
    result.wire_bytes += chunk.ByteSizeLong();
    impl_->link.received(chunk.ByteSizeLong());
    const auto& d = chunk.data();
    chunks.accept(d);  // the coordinator's chunks are checked like a worker's
    sink(d.tensor(), d.offset(), d.data());
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) fail("PullState", s);
  chunks.check_complete();
  return result;
}

PullResult CoordinatorClient::pull(int64_t round, const std::vector<TensorLayout>& layout,
                                   torch::Tensor& flat, double timeout_s, PullKind kind,
                                   bool with_velocity) {
  // The velocity, when asked for, follows the parameters with the same layout.
  const int64_t n = layout.back().offset + layout.back().numel, copies = with_velocity ? 2 : 1;
  TORCH_CHECK(flat.numel() == copies * n, "pull: buffer of ", flat.numel(), " values for ",
              copies * n);
  // Chunks land in `flat` itself when it is contiguous fp32 host memory (no second copy of the
  // model); otherwise (a GPU) in a host buffer copied over at the end.
  const bool direct =
      flat.device().is_cpu() && flat.is_contiguous() && flat.scalar_type() == torch::kFloat32;
  auto host = direct ? flat : torch::empty({flat.numel()}, torch::kFloat32);
  char* base = static_cast<char*>(host.data_ptr());
  auto check = [&](const v1::StateHeader& h) {
    const auto& specs = h.tensors();
    TORCH_CHECK(size_t(specs.size()) == copies * layout.size(), "coordinator sent ", specs.size(),
                " tensors, expected ", copies * layout.size());
    for (size_t i = 0; i < size_t(specs.size()); ++i) {
      const auto& l = layout[i % layout.size()];
      TORCH_CHECK(specs[int(i)].payload_bytes() == uint64_t(l.numel) * 4 &&
                      specs[int(i)].codec() == "none" &&
                      specs[int(i)].name() == (i < layout.size() ? "" : "velocity/") + l.name,
                  "coordinator's tensor ", specs[int(i)].name(), " does not match ", l.name);
    }
  };
  auto sink = [&](uint32_t t, uint64_t off, const std::string& data) {
    const auto& l = layout[t % layout.size()];
    std::memcpy(base + ((t / layout.size()) * n + l.offset) * 4 + off, data.data(), data.size());
  };
  PullResult result = stream_pull({round, kind, with_velocity, timeout_s}, check, sink);
  torch::NoGradGuard no_grad;
  if (!direct) flat.copy_(host);
  return result;
}

PullResult CoordinatorClient::pull_chunks(int64_t round, const std::vector<TensorLayout>& layout,
                                          double timeout_s, const ChunkSink& sink) {
  auto check = [&](const v1::StateHeader& h) {
    TORCH_CHECK(size_t(h.tensors().size()) == layout.size(), "coordinator sent ",
                h.tensors().size(), " tensors, the model has ", layout.size());
  };
  auto each = [&](uint32_t t, uint64_t off, const std::string& data) {
    sink(t, off, std::string_view(data));
  };
  return stream_pull({round, PullKind::kParams, false, timeout_s}, check, each);
}

PullResult CoordinatorClient::pull_aggregate(int64_t round, const std::vector<TensorLayout>& layout,
                                             std::vector<Encoded>& out, double timeout_s) {
  out.assign(layout.size(), Encoded{});
  auto check = [&](const v1::StateHeader& h) {
    const auto& specs = h.tensors();
    TORCH_CHECK(size_t(specs.size()) == layout.size(), "coordinator sent ", specs.size(),
                " tensors, the model has ", layout.size());
    for (size_t i = 0; i < layout.size(); ++i) {
      TORCH_CHECK(specs[int(i)].name() == layout[i].name, "coordinator's tensor ",
                  specs[int(i)].name(), " does not match ", layout[i].name);
      out[i].codec = specs[int(i)].codec();
      out[i].shape.assign(specs[int(i)].shape().begin(), specs[int(i)].shape().end());
      out[i].payload.reserve(specs[int(i)].payload_bytes());
    }
  };
  auto sink = [&](uint32_t t, uint64_t, const std::string& data) { out[t].payload.append(data); };
  return stream_pull({round, PullKind::kAggregate, false, timeout_s}, check, sink);
}

}  // namespace loco

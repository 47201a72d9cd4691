// The worker's gRPC client for the coordinator (see include/loco/coord_client.h).
#include "loco/coord_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "loco.grpc.pb.h"
#include "loco/coord_service.h"

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
  throw std::runtime_error(std::string("coordinator refused ") + rpc + " (" +
                           code_name(s.error_code()) + "): " + s.error_message());
}

std::chrono::system_clock::time_point deadline_in(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(int64_t(std::max(seconds, 0.001) * 1e3));
}

}  // namespace

struct CoordinatorClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;
};

CoordinatorClient::CoordinatorClient(const std::string& address, const CoordinatorConfig& config)
    : impl_(std::make_unique<Impl>()), config_(config), address_(address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(int(4 * kChunkBytes));
  impl_->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  impl_->stub = v1::Coordinator::NewStub(impl_->channel);
}

CoordinatorClient::~CoordinatorClient() = default;

JoinInfo CoordinatorClient::join(const std::string& name, int64_t num_params) {
  v1::JoinRequest req;
  req.set_name(name);
  req.set_num_params(num_params);
  auto start = std::chrono::steady_clock::now();
  double backoff = 0.2;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_in(10));
    v1::JoinReply reply;
    grpc::Status s = impl_->stub->Join(&ctx, req, &reply);
    if (s.ok()) {
      worker_id_ = reply.worker_id();
      return {reply.worker_id(), reply.round(), reply.shard(), reply.num_shards()};
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)
      fail("Join", s);
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited + backoff > config_.connect_timeout_s)
      throw std::runtime_error("coordinator at " + address_ + " unreachable for " +
                               std::to_string(int(waited)) + " s (" + s.error_message() +
                               "); is it running? (sync.coordinator.connect_timeout_s)");
    spdlog::info("worker: coordinator at {} not reachable yet (attempt {}), retrying in {:.1f} s",
                 address_, attempt, backoff);
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
    backoff = std::min(backoff * 2, 5.0);
  }
}

void CoordinatorClient::heartbeat() {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_in(config_.heartbeat_s * 2));
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id_);
  v1::HeartbeatReply reply;
  grpc::Status s = impl_->stub->Heartbeat(&ctx, req, &reply);
  if (!s.ok()) fail("Heartbeat", s);
}

void CoordinatorClient::leave() {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_in(5));
  v1::LeaveRequest req;
  req.set_worker_id(worker_id_);
  v1::LeaveReply reply;
  impl_->stub->Leave(&ctx, req, &reply);  // best effort: the lease expires anyway
}

uint64_t CoordinatorClient::push(Update update) {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_in(config_.round_timeout_s));
  v1::PushReply reply;
  auto writer = impl_->stub->PushUpdate(&ctx, &reply);
  v1::UpdateChunk chunk;
  auto* h = chunk.mutable_header();
  h->set_worker_id(worker_id_);
  h->set_round(update.round);
  h->set_tokens(update.tokens);
  h->set_loss(update.loss);
  for (const auto& t : update.tensors) {
    auto* spec = h->add_tensors();
    spec->set_name(t.name);
    for (int64_t d : t.encoded.shape) spec->add_shape(d);
    spec->set_dtype(t.dtype);
    spec->set_codec(t.encoded.codec);
    spec->set_payload_bytes(t.encoded.payload.size());
  }
  uint64_t wire = chunk.ByteSizeLong();
  bool ok = writer->Write(chunk);
  for (size_t i = 0; ok && i < update.tensors.size(); ++i) {
    const std::string& p = update.tensors[i].encoded.payload;
    for (size_t off = 0; ok && off < p.size(); off += kChunkBytes) {
      v1::UpdateChunk data;
      auto* d = data.mutable_data();
      d->set_tensor(uint32_t(i));
      d->set_offset(off);
      d->set_data(p.data() + off, std::min(kChunkBytes, p.size() - off));
      wire += data.ByteSizeLong();
      ok = writer->Write(data);
    }
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) fail("PushUpdate", s);
  return wire;
}

PullResult CoordinatorClient::pull(int64_t round, const std::vector<TensorLayout>& layout,
                                   torch::Tensor& flat, double timeout_s) {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_in(timeout_s));
  v1::PullRequest req;
  req.set_worker_id(worker_id_);
  req.set_round(round);
  auto reader = impl_->stub->PullState(&ctx, req);
  v1::StateChunk chunk;
  PullResult result;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    grpc::Status s = reader->Finish();
    fail("PullState", s.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "no state header") : s);
  }
  result.wire_bytes += chunk.ByteSizeLong();
  result.round = chunk.header().round();
  result.wait_s = chunk.header().wait_s();
  const auto& specs = chunk.header().tensors();
  TORCH_CHECK(size_t(specs.size()) == layout.size(), "coordinator sent ", specs.size(),
              " tensors, the model has ", layout.size());
  for (size_t i = 0; i < layout.size(); ++i)
    TORCH_CHECK(specs[int(i)].name() == layout[i].name &&
                    specs[int(i)].payload_bytes() == uint64_t(layout[i].numel) * 4,
                "coordinator's tensor ", specs[int(i)].name(), " does not match ", layout[i].name);
  auto host = torch::empty({flat.numel()}, torch::kFloat32);
  char* base = static_cast<char*>(host.data_ptr());
  uint64_t received = 0;
  while (reader->Read(&chunk)) {
    result.wire_bytes += chunk.ByteSizeLong();
    const auto& d = chunk.data();
    TORCH_CHECK(d.tensor() < layout.size() &&
                    d.offset() + d.data().size() <= uint64_t(layout[d.tensor()].numel) * 4,
                "coordinator sent a chunk outside tensor bounds");
    std::memcpy(base + layout[d.tensor()].offset * 4 + d.offset(), d.data().data(),
                d.data().size());
    received += d.data().size();
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) fail("PullState", s);
  TORCH_CHECK(received == uint64_t(flat.numel()) * 4, "state truncated: ", received, " of ",
              flat.numel() * 4, " bytes");
  torch::NoGradGuard no_grad;
  flat.copy_(host);
  return result;
}

}  // namespace loco

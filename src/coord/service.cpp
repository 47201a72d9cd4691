// The coordinator's gRPC service: thin handlers that translate messages for CoordinatorCore and
// its errors into gRPC status codes (see include/loco/coord_service.h).
#include "loco/coord_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "loco.grpc.pb.h"
#include "loco/coordinator.h"

namespace loco {
namespace {

grpc::Status to_status(const CoordError& e) {
  static const grpc::StatusCode codes[] = {
      grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::FAILED_PRECONDITION,
      grpc::StatusCode::NOT_FOUND, grpc::StatusCode::RESOURCE_EXHAUSTED,
      grpc::StatusCode::UNAVAILABLE};
  return grpc::Status(codes[e.code], e.what());
}

// Runs a handler body, turning refusals into statuses and logging who was refused and why.
template <class F>
grpc::Status guarded(const char* rpc, grpc::ServerContext* ctx, F&& body) {
  try {
    return body();
  } catch (const CoordError& e) {
    spdlog::warn("coordinator: refused {} from {}: {}", rpc, ctx->peer(), e.what());
    return to_status(e);
  } catch (const std::exception& e) {
    spdlog::error("coordinator: {} from {} failed: {}", rpc, ctx->peer(), e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
  }
}

class Service final : public v1::Coordinator::Service {
 public:
  explicit Service(CoordinatorCore& core, const Config& config) : core_(core), config_(config) {}

  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinReply* reply) override {
    return guarded("Join", ctx, [&] {
      JoinInfo info = core_.join(req->name(), req->num_params());
      reply->set_worker_id(info.worker_id);
      reply->set_round(info.round);
      reply->set_shard(info.shard);
      reply->set_num_shards(info.num_shards);
      reply->set_inner_steps(config_.sync.inner_steps);
      reply->set_heartbeat_s(config_.sync.coordinator.heartbeat_s);
      return grpc::Status::OK;
    });
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatReply* reply) override {
    return guarded("Heartbeat", ctx, [&] {
      core_.heartbeat(req->worker_id());
      reply->set_round(core_.round());
      return grpc::Status::OK;
    });
  }

  grpc::Status Leave(grpc::ServerContext* ctx, const v1::LeaveRequest* req,
                     v1::LeaveReply*) override {
    return guarded("Leave", ctx, [&] {
      core_.leave(req->worker_id());
      return grpc::Status::OK;
    });
  }

  grpc::Status PushUpdate(grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
                          v1::PushReply* reply) override {
    return guarded("PushUpdate", ctx, [&] {
      v1::UpdateChunk chunk;
      uint64_t wire = 0;
      if (!reader->Read(&chunk) || !chunk.has_header())
        throw CoordError(CoordError::kInvalidArgument, "a push must start with an UpdateHeader");
      wire += chunk.ByteSizeLong();
      Update update;
      const auto& h = chunk.header();
      update.worker_id = h.worker_id();
      update.round = h.round();
      update.tokens = h.tokens();
      update.loss = h.loss();
      uint64_t declared = 0;
      for (const auto& spec : h.tensors()) {
        TensorPayload t;
        t.name = spec.name();
        t.dtype = spec.dtype();
        t.encoded.codec = spec.codec();
        t.encoded.shape.assign(spec.shape().begin(), spec.shape().end());
        declared += spec.payload_bytes();
        update.tensors.push_back(std::move(t));
      }
      core_.check_header(update, declared);  // refuse before receiving a byte of payload
      std::vector<uint64_t> expected;
      for (const auto& spec : h.tensors()) expected.push_back(spec.payload_bytes());
      for (size_t i = 0; i < update.tensors.size(); ++i)
        update.tensors[i].encoded.payload.reserve(expected[i]);
      while (reader->Read(&chunk)) {
        wire += chunk.ByteSizeLong();
        if (!chunk.has_data())
          throw CoordError(CoordError::kInvalidArgument, "a second header in one push");
        const auto& d = chunk.data();
        if (d.tensor() >= update.tensors.size())
          throw CoordError(CoordError::kInvalidArgument, "data chunk for tensor " +
                                                             std::to_string(d.tensor()) + " of " +
                                                             std::to_string(update.tensors.size()));
        auto& payload = update.tensors[d.tensor()].encoded.payload;
        if (d.offset() != payload.size() || payload.size() + d.data().size() > expected[d.tensor()])
          throw CoordError(CoordError::kInvalidArgument,
                           "data chunk for '" + update.tensors[d.tensor()].name + "' at offset " +
                               std::to_string(d.offset()) + " does not continue its payload");
        payload.append(d.data());
      }
      for (size_t i = 0; i < update.tensors.size(); ++i)
        if (update.tensors[i].encoded.payload.size() != expected[i])
          throw CoordError(CoordError::kInvalidArgument,
                           "payload of '" + update.tensors[i].name + "' is truncated: " +
                               std::to_string(update.tensors[i].encoded.payload.size()) + " of " +
                               std::to_string(expected[i]) + " bytes");
      core_.push(update, wire);
      reply->set_round(update.round);
      reply->set_bytes_received(wire);
      return grpc::Status::OK;
    });
  }

  grpc::Status PullState(grpc::ServerContext* ctx, const v1::PullRequest* req,
                         grpc::ServerWriter<v1::StateChunk>* writer) override {
    return guarded("PullState", ctx, [&] {
      double wait_s = 0;
      auto [round, theta] = core_.wait_state(req->worker_id(), req->round(),
                                             config_.sync.coordinator.round_timeout_s * 2, &wait_s);
      v1::StateChunk chunk;
      auto* header = chunk.mutable_header();
      header->set_round(round);
      header->set_wait_s(wait_s);
      for (const auto& l : core_.layout()) {
        auto* spec = header->add_tensors();
        spec->set_name(l.name);
        for (int64_t d : l.shape) spec->add_shape(d);
        spec->set_dtype("float32");
        spec->set_codec("none");
        spec->set_payload_bytes(uint64_t(l.numel) * 4);
      }
      uint64_t wire = chunk.ByteSizeLong();
      writer->Write(chunk);
      const char* base = static_cast<const char*>(theta.data_ptr());
      const auto& layout = core_.layout();
      for (size_t i = 0; i < layout.size(); ++i) {
        size_t bytes = size_t(layout[i].numel) * 4;
        for (size_t off = 0; off < bytes; off += kChunkBytes) {
          v1::StateChunk data;
          auto* d = data.mutable_data();
          d->set_tensor(uint32_t(i));
          d->set_offset(off);
          d->set_data(base + layout[i].offset * 4 + off, std::min(kChunkBytes, bytes - off));
          wire += data.ByteSizeLong();
          if (!writer->Write(data)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
        }
      }
      core_.count_download(req->worker_id(), wire);
      return grpc::Status::OK;
    });
  }

  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest*,
                      v1::StatusReply* reply) override {
    return guarded("Status", ctx, [&] {
      CoordinatorStatus s = core_.status();
      reply->set_round(s.round);
      reply->set_total_rounds(s.total_rounds);
      reply->set_bytes_up(s.bytes_up);
      reply->set_bytes_down(s.bytes_down);
      reply->set_last_val_loss(s.last_val_loss);
      for (const auto& m : s.members) {
        auto* out = reply->add_members();
        out->set_worker_id(m.worker_id);
        out->set_name(m.name);
        out->set_shard(m.shard);
        out->set_reported(m.reported);
        out->set_last_loss(m.last_loss);
        out->set_bytes_up(m.bytes_up);
        out->set_bytes_down(m.bytes_down);
      }
      return grpc::Status::OK;
    });
  }

 private:
  CoordinatorCore& core_;
  const Config& config_;
};

}  // namespace

int run_coordinator(const Config& config, bool resume, const std::atomic<bool>& stop) {
  CoordinatorCore core(config, resume);
  Service service(core, config);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.sync.coordinator.address, grpc::InsecureServerCredentials(),
                           &port);
  builder.SetMaxReceiveMessageSize(int(4 * kChunkBytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    throw ConfigError("sync.coordinator.address: cannot listen on " +
                      config.sync.coordinator.address + " (port in use or bad address)");
  spdlog::info("coordinator: listening on {} (health and reflection services on)",
               config.sync.coordinator.address);
  while (!stop && !core.finished()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    core.tick();
  }
  if (stop) spdlog::info("coordinator: stopping on request at round {}", core.round());
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  core.save_checkpoint();
  auto s = core.status();
  spdlog::info(
      "coordinator: done at round {}/{}; {} bytes up, {} bytes down; final val loss {:.4f}",
      s.round, s.total_rounds, s.bytes_up, s.bytes_down, s.last_val_loss);
  return 0;
}

}  // namespace loco

// The coordinator's gRPC service: thin handlers that translate messages for CoordinatorCore and
// its errors into gRPC status codes (see include/loco/coord_service.h).
#include "loco/coord_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "loco.grpc.pb.h"
#include "loco/coordinator.h"
#include "loco/files.h"
#include "memory_gate.h"
#include "security.h"
#include "status_page.h"
#include "stream.h"

namespace loco {
namespace {

grpc::Status to_status(const CoordError& e) {
  static const grpc::StatusCode codes[] = {
      grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::FAILED_PRECONDITION,
      grpc::StatusCode::NOT_FOUND, grpc::StatusCode::RESOURCE_EXHAUSTED,
      grpc::StatusCode::UNAVAILABLE};
  return grpc::Status(codes[e.code], e.what());
}

class Service final : public v1::Coordinator::Service {
 public:
  Service(CoordinatorCore& core, const Config& config, std::string secret)
      : core_(core),
        config_(config),
        bearer_(secret.empty() ? "" : bearer(secret)),
        gate_(push_budget(core.num_params())) {}

  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinReply* reply) override {
    return guarded("Join", ctx, [&] {
      JoinInfo info =
          core_.join(req->name(), req->num_params(), req->has_shard() ? req->shard() : -1);
      reply->set_worker_id(info.worker_id);
      reply->set_round(info.round);
      reply->set_shard(info.shard);
      reply->set_num_shards(info.num_shards);
      reply->set_inner_steps(config_.sync.inner_steps);
      reply->set_heartbeat_s(config_.sync.coordinator.heartbeat_s);
      reply->set_cursor_tokens(info.cursor_tokens);
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
      core_.leave(req->worker_id(), req->lease_id(), req->consumed());
      return grpc::Status::OK;
    });
  }

  grpc::Status ClaimData(grpc::ServerContext* ctx, const v1::ClaimRequest* req,
                         v1::ClaimReply* reply) override {
    return guarded("ClaimData", ctx, [&] {
      std::vector<LeaseRange> resume;
      for (const auto& r : req->resume()) resume.push_back({r.epoch(), r.begin(), r.end()});
      DataLease lease =
          core_.claim_data(req->worker_id(), req->lease_id(), req->consumed(), req->want(),
                           req->windows(), resume, req->has_round() ? req->round() : -1);
      reply->set_lease_id(lease.id);
      for (const auto& r : lease.ranges) {
        auto* out = reply->add_ranges();
        out->set_epoch(r.epoch), out->set_begin(r.begin), out->set_end(r.end);
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status PushUpdate(grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
                          v1::PushReply* reply) override {
    return guarded("PushUpdate", ctx, [&] {
      v1::UpdateChunk chunk;
      if (!reader->Read(&chunk) || !chunk.has_header())
        throw CoordError(CoordError::kInvalidArgument, "a push must start with an UpdateHeader");
      uint64_t wire = chunk.ByteSizeLong(), declared = 0;
      std::optional<MemoryGate::Hold> hold;  // declared first: released after the payload is freed
      Update update = update_from_header(chunk.header());
      ChunkAssembler chunks(chunk.header().tensors());
      for (size_t i = 0; i < update.tensors.size(); ++i) declared += chunks.size(i);
      core_.check_header(update, declared);  // refuse before receiving a byte of payload
      // Wait for room to hold this push (its payload, and its decoded copy when not raw fp32).
      const bool raw = update.tensors.empty() || update.tensors[0].encoded.codec == "none";
      hold.emplace(gate_.acquire(declared + (raw ? 0 : uint64_t(core_.num_params()) * 4),
                                 [&] { return ctx->IsCancelled(); }));
      if (!*hold) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone while queued");
      // Admitted: the initial metadata tells the client to send its payload (it waits for it, so
      // that queued pushes do not fill the transport's buffers meanwhile).
      reader->SendInitialMetadata();
      for (size_t i = 0; i < update.tensors.size(); ++i)
        update.tensors[i].encoded.payload.reserve(chunks.size(i));
      while (reader->Read(&chunk)) {
        wire += chunk.ByteSizeLong();
        if (!chunk.has_data())
          throw CoordError(CoordError::kInvalidArgument, "a second header in one push");
        chunks.accept(chunk.data());
        update.tensors[chunk.data().tensor()].encoded.payload.append(chunk.data().data());
      }
      chunks.check_complete();
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
      const PullKind kind = from_proto(req->kind());
      Download d = core_.wait_download(req->worker_id(), kind, req->round(), req->with_velocity(),
                                       config_.sync.coordinator.round_timeout_s * 2, &wait_s);
      const auto& layout = d.layout ? *d.layout : core_.layout();  // a fragment's, or all
      v1::StateChunk chunk;
      auto* header = chunk.mutable_header();
      header->set_round(d.round);
      header->set_wait_s(wait_s);
      header->set_checksum(d.checksum);
      header->set_last_round(d.last_round);
      std::vector<std::string_view> payloads;  // tensor i's bytes, streamed after the header
      if (kind == PullKind::kAggregate) {
        for (size_t i = 0; i < layout.size(); ++i) {
          add_spec(header->mutable_tensors(), layout[i].name, layout[i].shape, d.tensors[i].codec,
                   d.tensors[i].payload.size());
          payloads.emplace_back(d.tensors[i].payload);
        }
      } else {  // raw fp32 from the shared state, the velocity after the parameters if asked
        for (const torch::Tensor* flat : {&d.params, &d.velocity}) {
          if (!flat->defined()) continue;
          const char* base = static_cast<const char*>(flat->data_ptr());
          for (const auto& l : layout) {
            add_spec(header->mutable_tensors(), flat == &d.velocity ? "velocity/" + l.name : l.name,
                     l.shape, "none", uint64_t(l.numel) * 4);
            payloads.emplace_back(base + l.offset * 4, size_t(l.numel) * 4);
          }
        }
      }
      uint64_t wire = chunk.ByteSizeLong();
      writer->Write(chunk);
      auto write = [&](const v1::StateChunk& m, uint64_t) { return writer->Write(m); };
      if (!write_chunks<v1::StateChunk>(payloads, write, &wire))
        return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
      core_.count_download(req->worker_id(), wire, kind);
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
      reply->set_tokens(s.tokens);
      reply->set_mode(s.mode);
      reply->set_wall_s(s.wall_s);
      for (const auto& p : s.train_losses) {
        auto* out = reply->add_train_losses();
        out->set_round(p.round), out->set_loss(p.loss);
      }
      for (const auto& p : s.val_losses) {
        auto* out = reply->add_val_losses();
        out->set_round(p.round), out->set_loss(p.loss);
      }
      for (const auto& m : s.members) {
        auto* out = reply->add_members();
        out->set_worker_id(m.worker_id);
        out->set_name(m.name);
        out->set_shard(m.shard);
        out->set_reported(m.reported);
        out->set_last_loss(m.last_loss);
        out->set_bytes_up(m.bytes_up);
        out->set_bytes_down(m.bytes_down);
        out->set_reported_state(m.reported_state);
        out->set_seen_s_ago(m.seen_s_ago);
      }
      return grpc::Status::OK;
    });
  }

 private:
  // Runs a handler body once the call proved it knows the shared secret, turning refusals into
  // statuses and logging who was refused and why (never the secret, nor what was sent instead).
  template <class F>
  grpc::Status guarded(const char* rpc, grpc::ServerContext* ctx, F&& body) {
    SecretCheck check = check_secret(*ctx, bearer_);
    if (check != SecretCheck::kOk) {
      spdlog::warn("coordinator: refused {} from {}: {} shared secret", rpc, ctx->peer(),
                   check == SecretCheck::kMissing ? "missing" : "wrong");
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing or wrong shared secret (sync.coordinator.secret_file)");
    }
    try {
      return body();
    } catch (const CoordError& e) {
      spdlog::warn("coordinator: refused {} from {}: {}", rpc, ctx->peer(), e.what());
      return to_status(e);
    } catch (const StreamError& e) {
      spdlog::warn("coordinator: refused {} from {}: {}", rpc, ctx->peer(), e.what());
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
      spdlog::error("coordinator: {} from {} failed: {}", rpc, ctx->peer(), e.what());
      return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
  }

  CoordinatorCore& core_;
  const Config& config_;
  const std::string bearer_;  // the metadata value every call must carry; empty: no secret
  MemoryGate gate_;           // bounds the pushes held in memory at once
};

// Freed push buffers go back to the system in the coordinator process. Building the model
// (src/model/gpt.cpp) tunes glibc to keep freed memory for a training step's reuse: a 1 GiB trim
// threshold and every block under 32 MiB in the heap, where a pushed tensor's payload then stays
// resident after it was added, as does the model's init once moved into the flat buffer; and each
// gRPC thread would get an arena of its own, where the 1 MiB chunks freed in dozens of them stay
// too. Measured: 8 workers x 561M, +3 GB resident after one round and 1.5 GB of the init for
// good; 64 workers x 5M, twice the RSS (docs/performance.md, "The coordinator at scale").
// Process-wide, glibc only.
void return_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  malloc_trim(0);  // what the model's construction freed in the heap (its init: 1.5 GB at 561M)
#endif
}

}  // namespace

int run_coordinator(const Config& config, bool resume, const std::atomic<bool>& stop,
                    const std::atomic<bool>* pause) {
  const auto& co = config.sync.coordinator;
  std::string secret = co.secret_file.empty() ? "" : read_secret(co.secret_file);
  auto credentials = server_credentials(co);
  CoordinatorCore core(config, resume);  // builds the model: tunes the allocator for training
  return_freed_memory();
  Service service(core, config, secret);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(co.address, credentials, &port);
  builder.SetMaxReceiveMessageSize(int(4 * kChunkBytes));
  // A fixed receive window per stream: gRPC's BDP probing would let it grow with the link, and a
  // push's bytes buffered in the transport are memory beside the payload being assembled (not
  // isolated in docs/performance.md's runs). 8 MiB still carries 640 Mbit/s at 100 ms RTT.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    throw ConfigError("sync.coordinator.address: cannot listen on " +
                      config.sync.coordinator.address + " (port in use or bad address)");
  spdlog::info(
      "coordinator: listening on {} ({}, {}; health and reflection services on, without the "
      "secret)",
      co.address,
      co.tls_cert.empty() ? "plaintext"
      : co.tls_ca.empty() ? "TLS"
                          : "TLS with client certificates",
      secret.empty() ? "no shared secret" : "shared secret required");
  std::unique_ptr<StatusPage> page;  // stopped before the summary is written
  if (!co.status_address.empty())
    page = std::make_unique<StatusPage>(co, secret, [&core] { return core.status(); });
  for (int64_t ticks = 1; !stop && !core.finished(); ++ticks) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    core.tick();
    if (pause && *pause) core.pause();  // once: later calls change nothing
#ifdef __GLIBC__
    // The pulls' 1 MiB messages, freed in the heap between live blocks, stay resident unless
    // trimmed: 1.5 GB after 8 pulls of 561M (docs/performance.md). Once a second is cheap.
    if (ticks % 10 == 0) malloc_trim(0);
#endif
  }
  if (stop) spdlog::info("coordinator: stopping on request at round {}", core.round());
  core.stop_waiting();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  page.reset();
  core.save_checkpoint();
  auto s = core.status();
  auto totals = core.totals();
  std::string summary = (std::filesystem::path(config.run.dir) / "summary.json").string();
  write_file_atomically(summary, totals.dump(1) + "\n");  // readers never see half a file
  if (const int64_t planned = core.paused_from())
    spdlog::info(
        "coordinator: paused at round {} of {}; `loco launch --resume` (or `loco coordinator "
        "--resume` and `loco worker --resume`) goes on from here",
        s.round, planned);
  spdlog::info(
      "coordinator: done at round {}/{}; {} bytes up, {} bytes down ({:.1f}x fewer than fp32 "
      "DiLoCo, {:.1f}x fewer than DDP); final val loss {:.4f}; {}",
      s.round, s.total_rounds, s.bytes_up, s.bytes_down,
      totals["ratio_vs_diloco_fp32"].get<double>(), totals["ratio_vs_ddp"].get<double>(),
      s.last_val_loss, summary);
  return 0;
}

}  // namespace loco

// The coordinator protocol's chunked streaming (see stream.h).
#include "stream.h"

#include <cmath>

namespace loco {

v1::PullKind to_proto(PullKind kind) {
  switch (kind) {
    case PullKind::kAggregate:
      return v1::AGGREGATE;
    case PullKind::kConsensus:
      return v1::CONSENSUS;
    case PullKind::kParams:
      break;
  }
  return v1::PARAMS;
}

PullKind from_proto(v1::PullKind kind) {
  switch (kind) {
    case v1::AGGREGATE:
      return PullKind::kAggregate;
    case v1::CONSENSUS:
      return PullKind::kConsensus;
    default:
      return PullKind::kParams;
  }
}

void add_spec(google::protobuf::RepeatedPtrField<v1::TensorSpec>* specs, const std::string& name,
              const std::vector<int64_t>& shape, const std::string& codec, uint64_t payload_bytes,
              const std::string& dtype) {
  auto* spec = specs->Add();
  spec->set_name(name);
  for (int64_t dim : shape) spec->add_shape(dim);
  spec->set_dtype(dtype);
  spec->set_codec(codec);
  spec->set_payload_bytes(payload_bytes);
}

void fill_update_header(const Update& u, v1::UpdateHeader* h) {
  h->set_worker_id(u.worker_id);
  h->set_round(u.round);
  h->set_tokens(u.tokens);
  h->set_loss(u.loss);
  if (!std::isnan(u.val_loss)) h->set_val_loss(u.val_loss), h->set_val_bpb(u.val_bpb);
  h->set_kind(u.kind == Update::kState ? v1::STATE : v1::DELTA);
  for (const auto& t : u.tensors)
    add_spec(h->mutable_tensors(), t.name, t.encoded.shape, t.encoded.codec,
             t.encoded.payload.size(), t.dtype);
}

Update update_from_header(const v1::UpdateHeader& h) {
  Update u;
  u.worker_id = h.worker_id();
  u.round = h.round();
  u.tokens = h.tokens();
  u.loss = h.loss();
  if (h.has_val_loss()) u.val_loss = h.val_loss(), u.val_bpb = h.val_bpb();
  u.kind = h.kind() == v1::STATE ? Update::kState : Update::kDelta;
  for (const auto& spec : h.tensors()) {
    TensorPayload t;
    t.name = spec.name();
    t.dtype = spec.dtype();
    t.encoded.codec = spec.codec();
    t.encoded.shape.assign(spec.shape().begin(), spec.shape().end());
    u.tensors.push_back(std::move(t));
  }
  return u;
}

ChunkAssembler::ChunkAssembler(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs) {
  for (const auto& spec : specs) {
    sizes_.push_back(spec.payload_bytes());
    names_.push_back(spec.name());
  }
  received_.assign(sizes_.size(), 0);
}

void ChunkAssembler::accept(const v1::DataChunk& d) {
  if (d.tensor() >= sizes_.size())
    throw StreamError("data chunk for tensor " + std::to_string(d.tensor()) + " of " +
                      std::to_string(sizes_.size()));
  uint64_t& got = received_[d.tensor()];
  if (d.offset() != got || got + d.data().size() > sizes_[d.tensor()])
    throw StreamError("data chunk for '" + names_[d.tensor()] + "' at offset " +
                      std::to_string(d.offset()) + " does not continue its payload");
  got += d.data().size();
}

void ChunkAssembler::check_complete() const {
  for (size_t i = 0; i < sizes_.size(); ++i)
    if (received_[i] != sizes_[i])
      throw StreamError("payload of '" + names_[i] +
                        "' is truncated: " + std::to_string(received_[i]) + " of " +
                        std::to_string(sizes_[i]) + " bytes");
}

}  // namespace loco

// The coordinator protocol's chunked streaming, written once for both ends (the service's push
// reader and pull writer, the client's push writer and pull reader): the mapping between
// include/loco/protocol.h's types and proto/loco.proto's messages, the payloads cut into
// DataChunks of kChunkBytes, and their reassembly with every chunk checked against the sizes the
// stream's header declared. gRPC stays out of it: callers pass a write function.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "loco.pb.h"
#include "loco/protocol.h"

namespace loco {

// A malformed stream: a chunk outside or out of order, a payload shorter than declared.
struct StreamError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

v1::PullKind to_proto(PullKind kind);
PullKind from_proto(v1::PullKind kind);

// Appends a TensorSpec for a payload of `payload_bytes` bytes.
void add_spec(google::protobuf::RepeatedPtrField<v1::TensorSpec>* specs, const std::string& name,
              const std::vector<int64_t>& shape, const std::string& codec, uint64_t payload_bytes,
              const std::string& dtype = "float32");

// A push's header: everything of `u` but the payloads, which follow as data chunks.
void fill_update_header(const Update& u, v1::UpdateHeader* h);
// The Update a push's header describes, payloads empty but reserved to the declared sizes.
Update update_from_header(const v1::UpdateHeader& h);

// Streams `payloads` (tensor i's bytes at index i) as DataChunks of at most kChunkBytes, in order,
// through `write(message, serialized_bytes)`, a function returning false when the stream broke.
// `Msg` is the stream's message type (UpdateChunk, StateChunk: both have a `data` field). Adds the
// serialized bytes to *wire; returns false when a write failed.
template <class Msg, class Write>
bool write_chunks(const std::vector<std::string_view>& payloads, Write&& write, uint64_t* wire) {
  for (size_t i = 0; i < payloads.size(); ++i) {
    std::string_view p = payloads[i];
    for (size_t off = 0; off < p.size(); off += kChunkBytes) {
      Msg message;
      auto* d = message.mutable_data();
      d->set_tensor(uint32_t(i));
      d->set_offset(off);
      d->set_data(p.data() + off, std::min(kChunkBytes, p.size() - off));
      const uint64_t bytes = message.ByteSizeLong();
      *wire += bytes;
      if (!write(message, bytes)) return false;
    }
  }
  return true;
}

// Checks the data chunks of one stream against the payload sizes its header declared: each
// chunk names a declared tensor and continues its payload, in order, without passing its end.
class ChunkAssembler {
 public:
  explicit ChunkAssembler(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs);
  // Throws StreamError when `d` does not continue its tensor's payload.
  void accept(const v1::DataChunk& d);
  // Throws StreamError naming the first tensor whose payload is short.
  void check_complete() const;
  uint64_t size(size_t tensor) const { return sizes_[tensor]; }

 private:
  std::vector<uint64_t> sizes_, received_;
  std::vector<std::string> names_;
};

}  // namespace loco

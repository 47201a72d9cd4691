// Codecs for what workers send: a float32 tensor in, bytes on the wire out, and back.
//
//   none  raw float32                      fp16 / bf16  half-precision values
//   int8  one float32 scale per chunk of values, int8 values
//   int4  one float32 scale per chunk of values, 4-bit values -7..7 (a zero level)
//   int2  four float32 levels per chunk of values (SparseLoCo's quantiser), 2-bit codes
//   dct   chunked orthonormal DCT-II (docs/design.md "DCT, concretely"), or no transform
//         (transform: none, the raw chunks), top-k (or highest band) of each chunk, indices packed
//         in 12 bits, values fp32 / fp16 / bf16 / int8 / int4 / int2 (int8, int4: one float32
//         scale per chunk; int2: four float32 levels per chunk, SparseLoCo's 2-bit quantiser)
//
// decode() validates everything it reads (sizes, index ranges, scales) and throws CodecError
// with what was wrong; it never reads past the payload. ErrorFeedback keeps, per tensor name,
// what the codec dropped, and adds it back before the next encode (c = C(x + e); e = x + e - D(c)).
// Byte layouts: src/codec/codec.cpp (none, fp16, bf16, int8, int4, int2) and src/codec/dct.cpp
// (dct); docs/codec.md has both, with measured sizes and speeds.
//
// CodecConfig (sync.codec), as make_codec() reads it:
//   type    none | fp16 | bf16 | int8 | int4 | int2 | dct
//   chunk   int8, int4, int2: values per scale (levels), 1..65536; dct: the largest block
//           edge, 1..64 (so a chunk has at most 4096 coefficients and an index fits 12 bits)
//   topk    dct: coefficients kept per chunk, >= 1; at least the chunk size keeps all (lossless
//           up to the value format)
//   values  dct: fp32 | fp16 | bf16 | int8 | int4 | int2
//   select  dct: topk (largest |coefficient|) | band (highest frequencies, see band_indices)
//   transform  dct: dct | none (top-k of the raw values of each chunk)
//   error_feedback, error_decay  read by the sync strategies, which wrap the codec in
//           ErrorFeedback
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "loco/config.h"

namespace loco {

struct CodecError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One encoded tensor, as it travels. `payload` is what is counted as bytes on the wire.
struct Encoded {
  std::string codec;           // the codec that wrote it ("none", "fp16", "bf16", "int8", "dct")
  std::vector<int64_t> shape;  // of the original tensor
  std::string payload;
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string name() const = 0;
  // x: float32, any device, any shape. The payload is device-independent.
  virtual Encoded encode(const torch::Tensor& x) = 0;
  // Returns a float32 CPU tensor of e.shape. Throws CodecError on a malformed payload.
  virtual torch::Tensor decode(const Encoded& e) const = 0;
  // Like decode, but may return a view into e.payload (valid while e lives) instead of a copy.
  virtual torch::Tensor decode_view(const Encoded& e) const { return decode(e); }
};

// The codec named by config.type. Throws ConfigError for unknown names or bad parameters.
std::unique_ptr<Codec> make_codec(const CodecConfig& config);

// Residuals of an error-feedback loop, one per tensor name.
class ErrorFeedback {
 public:
  // decay: beta in target = x + beta * residual (sync.codec.error_decay; 1 keeps it in full).
  explicit ErrorFeedback(Codec& codec, double decay = 1.0) : codec_(codec), decay_(decay) {}
  // Encodes x + decay * residual[name] and keeps what the codec lost as the new residual.
  Encoded encode(const std::string& name, const torch::Tensor& x);
  std::map<std::string, torch::Tensor>& residuals() { return residuals_; }

 private:
  Codec& codec_;
  double decay_;
  std::map<std::string, torch::Tensor> residuals_;
};

// ---- DCT building blocks, shared by the dct codec, the coordinator and the decoupled method ----

// The orthonormal DCT-II basis, n x n float32 on `device`: D[k][j] = s_k cos(pi (2j+1) k / 2n),
// s_0 = sqrt(1/n), s_k = sqrt(2/n); its inverse is its transpose. Cached per (n, device).
torch::Tensor dct_basis(int64_t n, const torch::Device& device = torch::kCPU);

// How the DCT cuts a tensor. It is viewed as rows x cols (0-D: 1 x 1; 1-D of length L: 1 x L;
// more dims: first dim x the rest) and cut into blocks n1 x n2, n1 the largest divisor of rows
// that is <= chunk, n2 likewise for cols (so 1-D chunks are 1 x n2). Chunks are numbered
// row-major over the grid of blocks; coefficient (k1, k2) of a chunk has index k1 * n2 + k2.
struct ChunkPlan {
  int64_t rows = 1, cols = 1;
  int64_t n1 = 1, n2 = 1;
  int64_t chunks() const { return (rows / n1) * (cols / n2); }
  int64_t chunk_size() const { return n1 * n2; }
  bool operator==(const ChunkPlan& o) const {
    return rows == o.rows && cols == o.cols && n1 == o.n1 && n2 == o.n2;
  }
};
ChunkPlan chunk_plan(c10::IntArrayRef shape, int64_t chunk);

// DCT coefficients of every chunk, [chunks, chunk_size] float32 on x's device (batched matmuls).
torch::Tensor dct_chunks(const torch::Tensor& x, const ChunkPlan& plan);
// The inverse: [chunks, chunk_size] coefficients back to a [rows, cols] tensor.
torch::Tensor idct_chunks(const torch::Tensor& coefficients, const ChunkPlan& plan);

// The k coefficients `select: band` keeps, int64 [k]: the highest frequencies, ranked by
// k1 / n1 + k2 / n2 (k1 + k2 for square chunks, k2 for 1-D), ties to the larger index.
torch::Tensor band_indices(const ChunkPlan& plan, int64_t k);

// The kept coefficients of one tensor: what a dct payload carries, decoded. With dct false
// (transform: none) they are raw values of the chunks, not DCT coefficients.
struct SparseChunks {
  std::vector<int64_t> shape;  // of the original tensor
  ChunkPlan plan;
  torch::Tensor indices;  // int64 [chunks, k], coefficient indices within each chunk, distinct
  torch::Tensor values;   // float32 [chunks, k], dequantised
  bool dct = true;        // whether the chunks are DCT coefficients (to_dense inverts them)
};

// Reads and validates a dct payload (CodecError if malformed); the result is on the CPU.
// decode() is to_dense(parse_dct()), refusing a result that overflows float32.
SparseChunks parse_dct(const Encoded& e);
// The wire form of `s` with explicit indices and values as `values` (fp32 | fp16 | bf16 | int8 |
// int4 | int2).
Encoded encode_sparse(const SparseChunks& s, const std::string& values);
// The tensor the kept coefficients stand for (inverse DCT unless !s.dct), of s.shape on
// s.values' device.
torch::Tensor to_dense(const SparseChunks& s);
// Merges the workers' payloads for one tensor: each coefficient becomes the mean over the
// payloads that carry it (not over all of them). Dense work is one tensor's coefficients at a
// time. Every chunk of the result carries K indices, K the largest number of distinct
// coefficients any chunk received; chunks with fewer are padded with zero-valued indices.
// Throws CodecError if a payload is malformed or the payloads disagree on shape, chunking or
// transform.
SparseChunks merge_sparse(const std::vector<Encoded>& payloads);

}  // namespace loco

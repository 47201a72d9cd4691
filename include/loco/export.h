// `loco export`: a checkpoint as the files other tools read.
//
// DIR/model.safetensors  the parameters in the safetensors format (an 8-byte little-endian header
//                        length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__},
//                        then the raw little-endian float32 tensors, 8-byte aligned), named as
//                        loco's GPT names them: wte.weight, blocks.N.attn.c_q.weight, ...,
//                        lm_head.weight (docs/export.md maps them to the architecture)
// DIR/config.json        the architecture: loco's model keys and the Hugging-Face-style names
//                        they correspond to, where the checkpoint came from
// DIR/tokenizer.model    the run's SentencePiece model
//
// The export is written into a sibling directory and renamed into place: a failure leaves no
// half-written DIR. An existing non-empty DIR is refused unless `force`, which replaces it.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace loco {

struct ExportOptions {
  std::string checkpoint;  // a run's or a coordinator's checkpoint file
  std::string out;         // the directory to write
  std::string tokenizer;   // empty: the data.tokenizer of the checkpoint's config
  bool force = false;      // replace a non-empty `out`
};

// Writes the export; throws std::runtime_error naming the file or the directory.
void export_model(const ExportOptions& options);

// Writes `tensors` (float32, any device; written as little-endian F32 in this order) as a
// safetensors file with `metadata` as its __metadata__.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace loco

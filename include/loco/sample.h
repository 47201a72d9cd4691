// Text generation from a checkpoint: temperature and top-k sampling, no KV cache (the context
// is re-run each token, truncated to seq_len), which is plenty for models of loco's size on CPU.
#pragma once

#include <cstdint>
#include <string>

namespace loco {

struct SampleOptions {
  std::string checkpoint;
  std::string tokenizer;  // empty: the data.tokenizer of the checkpoint's config
  std::string prompt;
  int64_t max_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 40;        // 0: the whole vocabulary
  int64_t seed = 0;
  std::string device = "cpu";
};

// Returns the continuation (without the prompt). Stops early at <eos> or <bos>.
std::string sample(const SampleOptions& options);

}  // namespace loco

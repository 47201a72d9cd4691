// `loco sample`: continue a prompt with a trained checkpoint (see include/loco/sample.h).
#include "loco/sample.h"

#include <torch/torch.h>

#include "loco/config.h"
#include "loco/tokenizer.h"
#include "loco/trainer.h"

namespace loco {

std::string sample(const SampleOptions& options) {
  torch::Device device = resolve_device(options.device);
  Config config;
  GPT model = load_model(options.checkpoint, device, &config);
  model->eval();
  Tokenizer tok =
      Tokenizer::load(options.tokenizer.empty() ? config.data.tokenizer : options.tokenizer);
  std::vector<int32_t> ids = {tok.bos_id()};
  for (int32_t id : tok.encode(options.prompt)) ids.push_back(id);
  const size_t prompt_len = ids.size();

  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(uint64_t(options.seed));
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    size_t start =
        ids.size() > size_t(config.model.seq_len) ? ids.size() - config.model.seq_len : 0;
    std::vector<int64_t> window(ids.begin() + start, ids.end());
    auto idx = torch::tensor(window, torch::kInt64).unsqueeze(0).to(device);
    auto logits = model->forward(idx).select(1, -1).squeeze(0).to(torch::kCPU);
    int64_t next;
    if (options.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / options.temperature;
      if (options.top_k > 0 && options.top_k < logits.size(0)) {
        auto kth = std::get<0>(logits.topk(options.top_k)).min();
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      next = torch::multinomial(torch::softmax(logits, -1), 1, false, gen).item<int64_t>();
    }
    if (next == tok.eos_id() || next == tok.bos_id()) break;
    ids.push_back(int32_t(next));
  }
  return tok.decode(std::vector<int32_t>(ids.begin() + prompt_len, ids.end()));
}

}  // namespace loco

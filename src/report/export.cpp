// `loco export` (see include/loco/export.h).
#include "loco/export.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/trainer.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors are little-endian");

// config.json: loco's six model keys, and the names Hugging-Face-style configs give them.
nlohmann::json architecture(const Config& config, const Checkpoint& ckpt,
                            const std::string& source) {
  const ModelConfig& m = config.model;
  return {
      {"architectures", {"LocoGPT"}},
      {"model_type", "loco-nanochat-gpt"},
      {"loco",
       {{"n_layer", m.n_layer},
        {"n_head", m.n_head},
        {"n_embd", m.n_embd},
        {"seq_len", m.seq_len},
        {"vocab_size", m.vocab_size},
        {"softcap", m.softcap}}},
      {"num_hidden_layers", m.n_layer},
      {"num_attention_heads", m.n_head},
      {"num_key_value_heads", m.n_head},
      {"hidden_size", m.n_embd},
      {"intermediate_size", 4 * m.n_embd},
      {"max_position_embeddings", m.seq_len},
      {"vocab_size", m.vocab_size},
      {"final_logit_softcapping", m.softcap},
      {"hidden_act", "relu2"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"qk_norm", true},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"torch_dtype", "float32"},
      {"source", {{"checkpoint", source}, {"step", ckpt.step}, {"tokens", ckpt.tokens}}},
  };
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out.flush()) throw std::runtime_error("export: cannot write " + path.string());
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  header["__metadata__"] = metadata;
  std::vector<torch::Tensor> host;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(t.scalar_type() == torch::kFloat32, "export: ", name, " is ", t.scalar_type(),
                ", expected float32");
    host.push_back(t.detach().to(torch::kCPU).contiguous());
    const int64_t bytes = host.back().numel() * 4;
    header[name] = {
        {"dtype", "F32"}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t length = text.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&length), 8);
  out.write(text.data(), std::streamsize(text.size()));
  for (const auto& t : host)
    out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.numel() * 4));
  if (!out.flush()) throw std::runtime_error("export: cannot write " + path);
}

void export_model(const ExportOptions& o) {
  const fs::path out = fs::path(o.out).lexically_normal();
  if (out.empty() || out.filename().empty())
    throw std::runtime_error("export: --out '" + o.out + "' names no directory");
  if (fs::exists(out) && !fs::is_directory(out))
    throw std::runtime_error("export: --out " + out.string() + " is a file, not a directory");
  if (fs::exists(out) && !fs::is_empty(out) && !o.force)
    throw std::runtime_error("export: " + out.string() +
                             " is not empty (pass --force to replace what is there)");

  Config config;
  GPT model = load_model(o.checkpoint, torch::kCPU, &config);
  Checkpoint ckpt = load_checkpoint(o.checkpoint);  // step and tokens for config.json
  const std::string tokenizer = o.tokenizer.empty() ? config.data.tokenizer : o.tokenizer;
  if (!fs::is_regular_file(tokenizer))
    throw std::runtime_error("export: the tokenizer " + tokenizer +
                             " is not there (pass --tokenizer FILE)");

  // Everything goes into a sibling directory first, renamed into place once complete.
  const fs::path partial = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(partial);
  fs::create_directories(partial);
  try {
    std::vector<std::pair<std::string, torch::Tensor>> named;
    for (const auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
    write_safetensors((partial / "model.safetensors").string(), named,
                      {{"format", "pt"}, {"source", o.checkpoint}});
    write_text(partial / "config.json", architecture(config, ckpt, o.checkpoint).dump(2) + "\n");
    fs::copy_file(tokenizer, partial / "tokenizer.model");
    if (fs::exists(out)) {
      const fs::path old = out.string() + ".old-" + std::to_string(::getpid());
      fs::rename(out, old);
      fs::rename(partial, out);
      fs::remove_all(old);
    } else {
      fs::rename(partial, out);
    }
  } catch (...) {
    fs::remove_all(partial);
    throw;
  }
}

}  // namespace loco

// `loco eval` (see include/loco/eval.h): val loss on corpora, multiple-choice tasks, and the
// per-layer drift against another checkpoint.
#include "loco/eval.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/files.h"
#include "loco/loader.h"
#include "loco/trainer.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The val token file of a --data argument (a corpus directory or a .bin file) and the tokenizer
// that corpus was encoded with, if it ships one.
struct Corpus {
  std::string tokens, tokenizer;
};
Corpus corpus_of(const std::string& data) {
  if (fs::is_directory(data)) {
    Corpus c{(fs::path(data) / "val.bin").string(), (fs::path(data) / "tokenizer.model").string()};
    if (!fs::exists(c.tokens))
      throw std::runtime_error("eval: --data " + data + " holds no val.bin (a directory that " +
                               "`loco data prepare` wrote, or a .bin file)");
    if (!fs::exists(c.tokenizer)) c.tokenizer.clear();
    return c;
  }
  if (!fs::exists(data)) throw std::runtime_error("eval: --data " + data + " is not there");
  return {data, ""};
}

// The tokenizer whose bytes per token measure `corpus`: the corpus's own, which must be the
// checkpoint's when both are there (another vocabulary would make every number meaningless).
std::string tokenizer_for(const Corpus& corpus, const std::string& checkpoint_tokenizer) {
  if (corpus.tokenizer.empty()) return checkpoint_tokenizer;
  if (fs::exists(checkpoint_tokenizer) &&
      file_bytes(corpus.tokenizer) != file_bytes(checkpoint_tokenizer))
    throw std::runtime_error(
        "eval: " + corpus.tokenizer + " is another tokenizer than the checkpoint's (" +
        checkpoint_tokenizer + "): prepare the corpus with `loco data prepare --tokenizer " +
        checkpoint_tokenizer + "`");
  return corpus.tokenizer;
}

// "embedding", "block.N" or "head": the layer a parameter belongs to.
std::string layer_of(const std::string& name) {
  if (name.rfind("blocks.", 0) == 0) return "block." + name.substr(7, name.find('.', 7) - 7);
  return name.rfind("lm_head", 0) == 0 ? "head" : "embedding";
}

// Incremental linear CKA: the sums that the centred cross-covariances need, batch by batch.
class CkaSums {
 public:
  void add(const torch::Tensor& x, const torch::Tensor& y) {
    auto a = x.to(torch::kFloat64).reshape({-1, x.size(-1)});
    auto b = y.to(torch::kFloat64).reshape({-1, y.size(-1)});
    if (!n_) {
      xy_ = torch::zeros({a.size(1), b.size(1)}, a.options());
      xx_ = torch::zeros({a.size(1), a.size(1)}, a.options());
      yy_ = torch::zeros({b.size(1), b.size(1)}, a.options());
      sx_ = torch::zeros({a.size(1)}, a.options());
      sy_ = torch::zeros({b.size(1)}, a.options());
    }
    xy_ += a.t().mm(b), xx_ += a.t().mm(a), yy_ += b.t().mm(b);
    sx_ += a.sum(0), sy_ += b.sum(0);
    n_ += a.size(0);
  }
  double value() const {
    const double n = double(n_);
    auto centred = [n](const torch::Tensor& s, const torch::Tensor& u, const torch::Tensor& v) {
      return s - torch::outer(u, v) / n;  // sum (a - mean)(b - mean)^T
    };
    auto xy = centred(xy_, sx_, sy_), xx = centred(xx_, sx_, sx_), yy = centred(yy_, sy_, sy_);
    const double den = (xx.norm() * yy.norm()).item<double>();
    return den > 0 ? xy.pow(2).sum().item<double>() / den : 0.0;
  }

 private:
  torch::Tensor xy_, xx_, yy_, sx_, sy_;
  int64_t n_ = 0;
};

std::vector<LayerSimilarity> compare_models(GPT& model, GPT& other, const TokenStream& val,
                                            const Config& config, int64_t batches,
                                            const torch::Device& device) {
  auto ours = model->named_parameters(), theirs = other->named_parameters();
  std::vector<std::string> layers;
  std::map<std::string, std::pair<double, double>> sq;  // layer -> (|w - w'|^2, |w'|^2)
  for (const auto& item : ours) {
    const torch::Tensor* t = theirs.find(item.key());
    if (!t || !t->sizes().equals(item.value().sizes()))
      throw std::runtime_error(
          "eval: --similarity: tensor " + item.key() +
          (t ? " has another shape in the other checkpoint" : " is not in the other checkpoint"));
    const std::string layer = layer_of(item.key());
    if (!sq.count(layer)) layers.push_back(layer);
    auto a = item.value().detach().to(torch::kFloat64), b = t->detach().to(torch::kFloat64);
    sq[layer].first += (a - b).pow(2).sum().item<double>();
    sq[layer].second += b.pow(2).sum().item<double>();
  }
  if (theirs.size() != ours.size())
    throw std::runtime_error("eval: --similarity: the other checkpoint has " +
                             std::to_string(theirs.size()) + " tensors, this one " +
                             std::to_string(ours.size()));

  torch::NoGradGuard no_grad;
  model->eval(), other->eval();
  std::vector<CkaSums> cka(size_t(config.model.n_layer) + 1);
  for (int64_t i = 0; i < batches; ++i) {
    auto input = eval_batch(val, i, config.train.batch_size, config.model.seq_len).input.to(device);
    auto a = model->layer_states(input), b = other->layer_states(input);
    for (size_t l = 0; l < cka.size(); ++l) cka[l].add(a[l], b[l]);
  }
  std::vector<LayerSimilarity> out;
  // layers come embedding, head, block.0, ... (the parameters' order); report them in depth order
  std::stable_partition(layers.begin(), layers.end(), [](auto& l) { return l != "head"; });
  for (const auto& layer : layers) {
    LayerSimilarity s{layer, std::nullopt, 0.0};
    const auto [diff, base] = sq[layer];
    s.weight_rel_l2 = base > 0 ? std::sqrt(diff / base) : std::sqrt(diff);
    if (layer == "embedding") s.cka = cka[0].value();
    if (layer.rfind("block.", 0) == 0) s.cka = cka[size_t(std::stoll(layer.substr(6))) + 1].value();
    out.push_back(s);
  }
  return out;
}

}  // namespace

double linear_cka(const torch::Tensor& x, const torch::Tensor& y) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0),
              "linear_cka: x and y must be [n, d] with the same n");
  CkaSums sums;
  sums.add(x, y);
  return sums.value();
}

EvalReport evaluate_checkpoint(const EvalOptions& o) {
  const torch::Device device = resolve_device(o.device);
  Config config;
  GPT model = load_model(o.checkpoint, device, &config);
  const Checkpoint ckpt = load_checkpoint(o.checkpoint);
  const std::string checkpoint_tokenizer =
      o.tokenizer.empty() ? config.data.tokenizer : o.tokenizer;
  const int64_t batches = o.batches > 0 ? o.batches : config.train.eval_batches;

  EvalReport report;
  report.checkpoint = o.checkpoint;
  report.step = ckpt.step, report.tokens = ckpt.tokens;
  std::vector<Corpus> corpora;
  for (const auto& d : o.data) corpora.push_back(corpus_of(d));
  if (corpora.empty()) corpora.push_back({config.data.val, ""});

  std::shared_ptr<const TokenStream> first_val;
  for (const auto& corpus : corpora) {
    Config scored = config;
    scored.data.tokenizer =
        tokenizer_for(corpus, checkpoint_tokenizer);  // first: the clearer error
    auto val = load_checked_tokens("--data", corpus.tokens, config.model);
    const torch::Tensor token_bytes = load_token_bytes(scored);
    // the trainer's batches (wrapping round a short stream), so the numbers are the run's own
    EvalStats s = evaluate_model(model, *val, token_bytes, config.train.batch_size,
                                 config.model.seq_len, batches, device);
    report.corpora.push_back(
        {corpus.tokens, s.loss, s.bpb, batches * config.train.batch_size * config.model.seq_len});
    spdlog::info("eval: {}: val loss {:.4f}, {:.4f} bits per byte", corpus.tokens, s.loss, s.bpb);
    if (!first_val) first_val = val;
  }

  if (!o.tasks.empty()) {
    const Tokenizer tokenizer = Tokenizer::load(checkpoint_tokenizer);
    for (const auto& file : o.tasks) {
      const auto examples = read_task_file(file);
      TaskScore t{file, int64_t(examples.size()), 0, 0, 0};
      int64_t right = 0, right_norm = 0;
      for (const auto& e : examples) {
        std::vector<ChoiceScore> scores;
        try {
          scores = score_choices(*model, tokenizer, e, device);
        } catch (const std::exception& error) {
          throw std::runtime_error(file + ":" + std::to_string(e.line) + ": " + error.what());
        }
        size_t best = 0, best_norm = 0;
        auto per_byte = [&](size_t c) {
          return scores[c].log_likelihood / double(std::max<size_t>(1, e.choices[c].size()));
        };
        for (size_t c = 1; c < scores.size(); ++c) {
          if (scores[c].log_likelihood > scores[best].log_likelihood) best = c;
          if (per_byte(c) > per_byte(best_norm)) best_norm = c;
        }
        right += int64_t(best) == e.answer;
        right_norm += int64_t(best_norm) == e.answer;
        t.choices = std::max<int64_t>(t.choices, int64_t(e.choices.size()));
      }
      t.accuracy = examples.empty() ? 0 : double(right) / double(examples.size());
      t.accuracy_norm = examples.empty() ? 0 : double(right_norm) / double(examples.size());
      spdlog::info("eval: {}: {} examples, accuracy {:.4f}, normalised {:.4f}", file, t.examples,
                   t.accuracy, t.accuracy_norm);
      report.tasks.push_back(t);
    }
  }

  if (!o.similarity.empty()) {
    Config other_config;
    GPT other = load_model(o.similarity, device, &other_config);
    report.similarity_to = o.similarity;
    report.layers = compare_models(model, other, *first_val, config, batches, device);
  }
  if (!o.json.empty()) write_file_atomically(o.json, report.to_json().dump(1) + "\n");
  return report;
}

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"checkpoint", checkpoint}, {"step", step}, {"tokens", tokens}};
  j["corpora"] = nlohmann::json::array();
  for (const auto& c : corpora)
    j["corpora"].push_back(
        {{"data", c.data}, {"val_loss", c.val_loss}, {"val_bpb", c.val_bpb}, {"tokens", c.tokens}});
  j["tasks"] = nlohmann::json::array();
  for (const auto& t : tasks)
    j["tasks"].push_back({{"file", t.file},
                          {"examples", t.examples},
                          {"choices", t.choices},
                          {"accuracy", t.accuracy},
                          {"accuracy_norm", t.accuracy_norm}});
  if (!similarity_to.empty()) {
    nlohmann::json layers_json = nlohmann::json::array();
    for (const auto& l : layers)
      layers_json.push_back({{"layer", l.layer},
                             {"cka", l.cka ? nlohmann::json(*l.cka) : nlohmann::json(nullptr)},
                             {"weight_rel_l2", l.weight_rel_l2}});
    j["similarity"] = {{"other", similarity_to}, {"layers", layers_json}};
  }
  return j;
}

std::string format_report(const EvalReport& r) {
  std::ostringstream out;
  out << fmt::format("{} (step {}, {} tokens)\n", r.checkpoint, r.step, r.tokens);
  out << fmt::format("\n{:<48} {:>9} {:>9} {:>9}\n", "val data", "loss", "bpb", "tokens");
  for (const auto& c : r.corpora)
    out << fmt::format("{:<48} {:>9.4f} {:>9.4f} {:>9}\n", c.data, c.val_loss, c.val_bpb, c.tokens);
  if (!r.tasks.empty()) {
    out << fmt::format("\n{:<48} {:>9} {:>9} {:>9} {:>9}\n", "task", "examples", "acc", "acc_norm",
                       "chance");
    for (const auto& t : r.tasks)
      out << fmt::format("{:<48} {:>9} {:>9.4f} {:>9.4f} {:>9.4f}\n", t.file, t.examples,
                         t.accuracy, t.accuracy_norm, t.choices ? 1.0 / double(t.choices) : 0.0);
  }
  if (!r.similarity_to.empty()) {
    out << fmt::format("\nagainst {}\n{:<12} {:>10} {:>14}\n", r.similarity_to, "layer", "CKA",
                       "weight rel L2");
    for (const auto& l : r.layers)
      out << fmt::format("{:<12} {:>10} {:>14.4f}\n", l.layer,
                         l.cka ? fmt::format("{:.4f}", *l.cka) : std::string("-"), l.weight_rel_l2);
  }
  return out.str();
}

}  // namespace loco

// Multiple-choice tasks for `loco eval` (see include/loco/eval.h): the JSONL task file, each
// choice's log-likelihood under a model, and the cloze task loco draws from a corpus's val split.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "loco/eval.h"
#include "loco/files.h"
#include "loco/loader.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

TaskExample parse_example(const std::string& line, const std::string& where) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw std::runtime_error(where +
                             ": not a JSON object (want {\"context\", \"choices\", "
                             "\"answer\"})");
  TaskExample e;
  if (!j.contains("context") || !j["context"].is_string())
    throw std::runtime_error(where + ": 'context' is missing or not a string");
  e.context = j["context"];
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2)
    throw std::runtime_error(where + ": 'choices' must be a list of at least two strings");
  for (const auto& c : j["choices"]) {
    if (!c.is_string() || c.get<std::string>().empty())
      throw std::runtime_error(where + ": every choice must be a non-empty string");
    e.choices.push_back(c);
  }
  if (!j.contains("answer") || !j["answer"].is_number_integer())
    throw std::runtime_error(where + ": 'answer' is missing or not an integer (a choice's index)");
  e.answer = j["answer"];
  if (e.answer < 0 || e.answer >= int64_t(e.choices.size()))
    throw std::runtime_error(where + ": 'answer' " + std::to_string(e.answer) + " is outside 0.." +
                             std::to_string(e.choices.size() - 1));
  return e;
}

// The text `ids[from, to)` adds to the decoded `ids[0, from)`: how those tokens read after the
// ones before them (a decoder drops the leading space of a text's first word).
std::string continuation_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                              size_t from, size_t to) {
  const std::string head = tokenizer.decode({ids.begin(), ids.begin() + long(from)});
  const std::string whole = tokenizer.decode({ids.begin(), ids.begin() + long(to)});
  if (whole.compare(0, head.size(), head) == 0) return whole.substr(head.size());
  return " " + tokenizer.decode({ids.begin() + long(from), ids.begin() + long(to)});
}

}  // namespace

std::vector<TaskExample> read_task_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("eval: cannot read the task file " + path);
  std::vector<TaskExample> examples;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    examples.push_back(parse_example(line, path + ":" + std::to_string(n)));
    examples.back().line = n;
  }
  if (examples.empty())
    throw std::runtime_error("eval: the task file " + path + " has no examples");
  return examples;
}

std::vector<ChoiceScore> score_choices(GPTImpl& model, const Tokenizer& tokenizer,
                                       const TaskExample& e, const torch::Device& device) {
  const int64_t seq_len = model.config().seq_len;
  std::vector<int32_t> context = {int32_t(tokenizer.bos_id())};
  for (int32_t id : tokenizer.encode(e.context)) context.push_back(id);
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int64_t> continuation;  // tokens each choice adds
  for (size_t c = 0; c < e.choices.size(); ++c) {
    std::vector<int32_t> ids = {int32_t(tokenizer.bos_id())};
    for (int32_t id : tokenizer.encode(e.context + e.choices[c])) ids.push_back(id);
    size_t common = 0;
    while (common < context.size() && common < ids.size() && context[common] == ids[common])
      ++common;
    const int64_t added = int64_t(ids.size() - common);
    if (added < 1 || added > seq_len)
      throw std::runtime_error(
          fmt::format("choice {} is {} tokens after the context (1..{} fit)", c, added, seq_len));
    if (int64_t(ids.size()) > seq_len + 1) ids.erase(ids.begin(), ids.end() - (seq_len + 1));
    sequences.push_back(std::move(ids));
    continuation.push_back(added);
  }
  size_t longest = 0;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  const int64_t n = int64_t(sequences.size()), t = int64_t(longest) - 1;
  auto tokens = torch::zeros({n, t + 1}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i)
    for (size_t k = 0; k < sequences[size_t(i)].size(); ++k)
      tokens[i][int64_t(k)] = sequences[size_t(i)][k];

  torch::NoGradGuard no_grad;
  model.eval();
  auto input = tokens.narrow(1, 0, t).to(device), target = tokens.narrow(1, 1, t).to(device);
  auto logp = torch::log_softmax(model.forward(input), -1).gather(-1, target.unsqueeze(-1));
  logp = logp.squeeze(-1).to(torch::kFloat64).cpu();
  std::vector<ChoiceScore> scores;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t end = int64_t(sequences[size_t(i)].size()) - 1;  // targets 0..end-1 are real
    const int64_t added = continuation[size_t(i)];
    scores.push_back({logp[i].narrow(0, end - added, added).sum().item<double>(), added});
  }
  return scores;
}

int64_t make_cloze_task(const ClozeOptions& o) {
  if (o.choices < 2 || o.examples < 1 || o.context_tokens < 1 || o.answer_tokens < 1)
    throw std::runtime_error(
        "data cloze: --choices >= 2, --examples, --context-tokens and "
        "--answer-tokens >= 1");
  const fs::path dir(o.data);
  const Tokenizer tokenizer = Tokenizer::load((dir / "tokenizer.model").string());
  const auto stream = load_tokens((dir / "val.bin").string());
  const torch::Tensor all = stream->to_tensor();
  const int64_t* p = all.data_ptr<int64_t>();
  const size_t need = size_t(o.context_tokens + o.answer_tokens);

  // Documents of the val split (each starts with <bos>) long enough for a context and an answer.
  std::vector<std::vector<int32_t>> docs;
  std::vector<int32_t> doc;
  auto close = [&] {
    if (doc.size() >= need) docs.emplace_back(doc.begin(), doc.begin() + long(need));
    doc.clear();
  };
  for (int64_t i = 0; i < all.numel(); ++i) {
    if (p[i] == tokenizer.bos_id())
      close();
    else
      doc.push_back(int32_t(p[i]));
  }
  close();
  if (int64_t(docs.size()) < o.choices)
    throw std::runtime_error(fmt::format(
        "data cloze: {} holds {} val documents of at least {} tokens; {} choices need {}",
        (dir / "val.bin").string(), docs.size(), need, o.choices, o.choices));

  std::vector<std::string> answers;
  for (const auto& d : docs)
    answers.push_back(continuation_text(tokenizer, d, size_t(o.context_tokens), need));
  std::mt19937_64 rng(uint64_t(o.seed));
  std::vector<size_t> order(docs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);

  std::string out;
  int64_t written = 0;
  for (size_t i : order) {
    if (written == o.examples) break;
    if (answers[i].find_first_not_of(" \n") == std::string::npos) continue;
    std::vector<std::string> choices = {answers[i]};
    std::set<std::string> seen = {answers[i]};
    for (int tries = 0; int64_t(choices.size()) < o.choices && tries < 100 * o.choices; ++tries) {
      size_t j = std::uniform_int_distribution<size_t>(0, docs.size() - 1)(rng);
      if (j != i && seen.insert(answers[j]).second) choices.push_back(answers[j]);
    }
    if (int64_t(choices.size()) < o.choices) continue;
    const auto answer = int64_t(std::uniform_int_distribution<int64_t>(0, o.choices - 1)(rng));
    std::swap(choices[0], choices[size_t(answer)]);
    const std::vector<int32_t> head(docs[i].begin(), docs[i].begin() + o.context_tokens);
    nlohmann::json line = {
        {"context", tokenizer.decode(head)}, {"choices", choices}, {"answer", answer}};
    out += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    ++written;
  }
  write_file_atomically(o.out, out);
  spdlog::info("data cloze: wrote {} examples of {} choices to {} (from {} val documents)", written,
               o.choices, o.out, docs.size());
  return written;
}

}  // namespace loco

// Reading raw documents for `loco data prepare`, one at a time: plain text (one document per
// line), JSONL ({"text": ...} per line) and JSON arrays (of strings or of {"text": ...} objects).
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "loco/prepare.h"

namespace loco {
namespace {

namespace fs = std::filesystem;

// Every regular file of the inputs; directories are walked recursively in sorted order,
// skipping hidden entries.
std::vector<fs::path> list_files(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const auto& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(input); it != fs::end(it); ++it) {
        bool hidden = it->path().filename().string().rfind('.', 0) == 0;
        if (hidden && it->is_directory()) it.disable_recursion_pending();
        if (!hidden && it->is_regular_file()) found.push_back(it->path());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(input, ec)) {
      files.emplace_back(input);
    } else {
      throw std::runtime_error(input + ": no such file or directory");
    }
  }
  return files;
}

bool is_blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); });
}

// The "text" of one JSON value: the value itself when it is a string, else its "text" field.
bool json_text(const nlohmann::json& value, std::string* text) {
  if (value.is_string()) {
    *text = value.get<std::string>();
    return true;
  }
  if (value.is_object() && value.contains("text") && value["text"].is_string()) {
    *text = value["text"].get<std::string>();
    return true;
  }
  return false;
}

nlohmann::json read_json_array(const fs::path& path) {
  std::ifstream in(path);
  nlohmann::json array;
  try {
    array = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: invalid JSON ({})", path.string(), e.what()));
  }
  if (!array.is_array()) {
    throw std::runtime_error(path.string() + ": expected a JSON array of documents");
  }
  return array;
}

// A JSONL line's document ("" for a blank line).
std::string jsonl_text(const fs::path& path, int64_t number, const std::string& line) {
  if (is_blank(line)) return "";
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(
        fmt::format("{}:{}: invalid JSON ({})", path.string(), number, e.what()));
  }
  std::string text;
  if (!value.is_object() || !json_text(value, &text)) {
    throw std::runtime_error(fmt::format("{}:{}: expected an object with a string \"text\" field",
                                         path.string(), number));
  }
  return text;
}

}  // namespace

// Where the reader is: the file, and in it the open line stream or the parsed JSON array.
struct DocumentReader::State {
  std::vector<fs::path> files;
  size_t file = 0;  // the file being read (files.size(): done)
  bool open = false;
  std::ifstream lines;  // text and JSONL
  enum class Kind { text, jsonl, json };
  Kind kind = Kind::text;  // of the open file
  int64_t line_number = 0;
  nlohmann::json array;  // a .json file's documents
  size_t element = 0;
  int64_t total = 0, done = 0;
};

DocumentReader::DocumentReader(const std::vector<std::string>& inputs)
    : state_(std::make_unique<State>()) {
  state_->files = list_files(inputs);
  for (const auto& f : state_->files) state_->total += static_cast<int64_t>(fs::file_size(f));
}

DocumentReader::~DocumentReader() = default;

int64_t DocumentReader::total_bytes() const {
  return state_->total;
}
int64_t DocumentReader::bytes_read() const {
  return state_->done;
}

bool DocumentReader::next(std::string& doc) {
  State& s = *state_;
  while (s.file < s.files.size()) {
    const fs::path& path = s.files[s.file];
    if (!s.open) {
      const std::string extension = path.extension().string();
      s.kind = extension == ".json"    ? State::Kind::json
               : extension == ".jsonl" ? State::Kind::jsonl
                                       : State::Kind::text;
      if (s.kind == State::Kind::json) {
        s.array = read_json_array(path);
        s.element = 0;
      } else {
        s.lines = std::ifstream(path, std::ios::binary);
        if (!s.lines) throw std::runtime_error(path.string() + ": cannot open");
        s.line_number = 0;
      }
      s.open = true;
    }
    const bool json = s.kind == State::Kind::json;
    std::string text;
    bool got = false;
    if (json) {
      if (s.element < s.array.size()) {
        if (!json_text(s.array[s.element], &text)) {
          throw std::runtime_error(fmt::format(
              "{}: element {} is neither a string nor an object with a string \"text\" field",
              path.string(), s.element));
        }
        ++s.element;
        got = true;
      }
    } else if (std::getline(s.lines, text)) {
      ++s.line_number;
      s.done += static_cast<int64_t>(text.size()) + 1;
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (s.line_number == 1 && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // BOM
      if (s.kind == State::Kind::jsonl) text = jsonl_text(path, s.line_number, text);
      got = true;
    }
    if (!got) {  // the file is done
      if (json) s.done += static_cast<int64_t>(fs::file_size(path));
      s.array = nlohmann::json();
      s.lines = std::ifstream();
      s.open = false;
      ++s.file;
      continue;
    }
    if (is_blank(text)) continue;
    doc = std::move(text);
    return true;
  }
  return false;
}

std::vector<std::string> read_documents(const std::vector<std::string>& inputs) {
  DocumentReader reader(inputs);
  std::vector<std::string> docs;
  for (std::string doc; reader.next(doc);) docs.push_back(std::move(doc));
  return docs;
}

}  // namespace loco

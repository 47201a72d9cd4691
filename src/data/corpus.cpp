// Reading raw documents for `loco data prepare`: plain text (one document per line), JSONL
// ({"text": ...} per line) and JSON arrays (of strings or of {"text": ...} objects).
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "loco/prepare.h"
#include "loco/progress.h"

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

void add_document(std::vector<std::string>& docs, std::string text) {
  if (!is_blank(text)) docs.push_back(std::move(text));
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

void read_json_array(const fs::path& path, std::vector<std::string>& docs) {
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
  for (size_t i = 0; i < array.size(); ++i) {
    std::string text;
    if (!json_text(array[i], &text)) {
      throw std::runtime_error(fmt::format(
          "{}: element {} is neither a string nor an object with a string \"text\" field",
          path.string(), i));
    }
    add_document(docs, std::move(text));
  }
}

// Plain text (one document per line) or JSONL (one {"text": ...} object per line).
void read_lines(const fs::path& path, bool jsonl, std::vector<std::string>& docs,
                Progress& progress, int64_t& bytes_read) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    bytes_read += static_cast<int64_t>(line.size()) + 1;
    progress.update(bytes_read);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (!jsonl) {
      add_document(docs, std::move(line));
      continue;
    }
    if (is_blank(line)) continue;
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
    add_document(docs, std::move(text));
  }
}

}  // namespace

std::vector<std::string> read_documents(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files = list_files(inputs);
  int64_t total_bytes = 0;
  for (const auto& file : files) total_bytes += static_cast<int64_t>(fs::file_size(file));
  Progress progress("read", total_bytes, "bytes");
  std::vector<std::string> docs;
  int64_t bytes_read = 0;
  for (const auto& file : files) {
    std::string ext = file.extension().string();
    if (ext == ".json") {
      read_json_array(file, docs);
      bytes_read += static_cast<int64_t>(fs::file_size(file));
      progress.update(bytes_read);
    } else {
      read_lines(file, ext == ".jsonl", docs, progress, bytes_read);
    }
  }
  progress.finish();
  return docs;
}

}  // namespace loco

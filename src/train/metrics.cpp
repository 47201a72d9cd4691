// metrics.jsonl writing and reading (see include/loco/metrics.h).
#include "loco/metrics.h"

#include <filesystem>
#include <stdexcept>
#include <vector>

namespace loco {

std::vector<nlohmann::json> read_metrics(const std::string& path, int64_t* skipped) {
  std::vector<nlohmann::json> records;
  int64_t bad = 0;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object())
      records.push_back(std::move(record));
    else
      ++bad;
  }
  if (skipped) *skipped = bad;
  return records;
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t keep_up_to_step) : path_(path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  if (keep_up_to_step >= 0 && std::filesystem::exists(path)) {
    auto records = read_metrics(path);
    std::ofstream rewrite(path + ".tmp", std::ios::trunc);
    for (const auto& r : records)
      if (r.value("step", int64_t(0)) <= keep_up_to_step) rewrite << r.dump() << "\n";
    rewrite.close();
    std::filesystem::rename(path + ".tmp", path);
  }
  out_.open(path, std::ios::app);
  if (!out_) throw std::runtime_error(path + ": cannot open metrics file for writing");
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace loco

// metrics.jsonl writing and reading, and its TensorBoard copy (see include/loco/metrics.h).
#include "loco/metrics.h"

#include <array>
#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace loco {
namespace {

namespace fs = std::filesystem;

// The TensorBoard directory beside metrics.jsonl; prepares it before the writer opens a file.
std::string tb_dir(const std::string& metrics_path, int64_t keep_up_to_step) {
  std::string dir = (fs::path(metrics_path).parent_path() / "tb").string();
  if (keep_up_to_step >= 0) truncate_event_files(dir, keep_up_to_step);
  return dir;
}

}  // namespace

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

std::vector<Scalar> tensorboard_scalars(const nlohmann::json& record) {
  static const std::array<const char*, 5> kSkipped = {"step", "round", "worker", "rank",
                                                      "param_checksum"};
  std::vector<Scalar> scalars;
  for (const auto& [key, value] : record.items()) {
    if (!value.is_number()) continue;  // is_number() is false for booleans
    bool skipped = false;
    for (const char* s : kSkipped) skipped = skipped || key == s;
    if (!skipped) scalars.push_back({key, value.get<float>()});
  }
  return scalars;
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t keep_up_to_step)
    : path_(path), tb_(tb_dir(path, keep_up_to_step)) {
  if (keep_up_to_step >= 0 && fs::exists(path)) {
    auto records = read_metrics(path);
    std::ofstream rewrite(path + ".tmp", std::ios::trunc);
    for (const auto& r : records)
      if (r.value("step", int64_t(0)) <= keep_up_to_step) rewrite << r.dump() << "\n";
    rewrite.close();
    fs::rename(path + ".tmp", path);
  }
  out_.open(path, std::ios::app);
  if (!out_) throw std::runtime_error(path + ": cannot open metrics file for writing");
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  tb_.write_scalars(record.value("step", int64_t(0)), tensorboard_scalars(record), now);
}

}  // namespace loco

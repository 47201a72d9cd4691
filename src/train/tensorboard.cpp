// TensorBoard event files: CRC-32C, TFRecord framing, and tensorflow.Event messages generated from
// proto/tensorboard.proto (see include/loco/tensorboard.h).
#include "loco/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <stdexcept>

#include "tensorboard.pb.h"

namespace loco {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

void put_le(std::string& out, uint64_t bits, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char(uint8_t(bits >> (8 * i))));
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return v;
}

std::string host_name() {
  std::array<char, 256> buf{};
  if (::gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf.data();
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto& table = crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + kCrcMaskDelta;
}

std::string encode_file_version_event(double wall_time, const std::string& version) {
  tensorflow::Event event;
  event.set_wall_time(wall_time);
  event.set_file_version(version);
  return event.SerializeAsString();
}

std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::vector<Scalar>& values) {
  tensorflow::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  auto* summary = event.mutable_summary();
  for (const auto& s : values) {
    auto* value = summary->add_value();
    value->set_tag(s.tag);
    value->set_simple_value(s.value);
  }
  return event.SerializeAsString();
}

std::string frame_record(const std::string& data) {
  std::string record;
  put_le(record, data.size(), 8);
  put_le(record, masked_crc32c(record.data(), 8), 4);
  record += data;
  put_le(record, masked_crc32c(data.data(), data.size()), 4);
  return record;
}

std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> records;
  std::array<char, 12> header{};
  std::array<char, 4> footer{};
  while (in.read(header.data(), header.size())) {
    if (uint32_t(get_le(header.data() + 8, 4)) != masked_crc32c(header.data(), 8)) break;
    uint64_t length = get_le(header.data(), 8);
    if (length > (uint64_t(1) << 30)) break;
    std::string data(length, '\0');
    if (!in.read(data.data(), std::streamsize(length)) || !in.read(footer.data(), 4)) break;
    if (uint32_t(get_le(footer.data(), 4)) != masked_crc32c(data.data(), data.size())) break;
    records.push_back(std::move(data));
  }
  return records;
}

EventWriter::EventWriter(const std::string& dir) {
  fs::create_directories(dir);
  double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string base = (fs::path(dir) / ("events.out.tfevents." + std::to_string(int64_t(now)) + "." +
                                       host_name() + "." + std::to_string(::getpid())))
                         .string();
  path_ = base;
  for (int n = 1; fs::exists(path_); ++n) path_ = base + "." + std::to_string(n);
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw std::runtime_error(path_ + ": cannot open TensorBoard event file for writing");
  write_record(encode_file_version_event(now, "brain.Event:2"));
}

void EventWriter::write_scalars(int64_t step, const std::vector<Scalar>& values, double wall_time) {
  if (!values.empty()) write_record(encode_scalars_event(wall_time, step, values));
}

void EventWriter::write_record(const std::string& data) {
  out_ << frame_record(data);
  out_.flush();
}

void truncate_event_files(const std::string& dir, int64_t keep_up_to_step) {
  if (!fs::is_directory(dir)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const fs::path& path = entry.path();
    if (!entry.is_regular_file() || path.filename().string().rfind("events.out.tfevents.", 0) != 0)
      continue;
    fs::path tmp = path.parent_path() / ".rewrite.tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      for (const auto& data : read_records(path.string())) {
        tensorflow::Event event;
        if (!event.ParseFromString(data)) break;  // not an event we can read: like a torn tail
        if (event.step() <= keep_up_to_step) out << frame_record(data);
      }
    }
    fs::rename(tmp, path);
  }
}

}  // namespace loco

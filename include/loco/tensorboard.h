// TensorBoard event files, written without TensorFlow: scalars only, enough for
// `tensorboard --logdir runs/`. MetricsWriter (metrics.h) feeds one per run directory.
//
// An event file is a sequence of TFRecords:
//   uint64 length (little-endian) | uint32 masked_crc32c(length) | data | uint32
//   masked_crc32c(data)
// where `data` is a serialized tensorflow.Event, generated from proto/tensorboard.proto (the part
// of tensorflow/core/util/event.proto and summary.proto that scalars need, same field numbers):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record of a file is an Event with file_version "brain.Event:2". To read one back,
// tensorflow::Event::ParseFromString (tensorboard.pb.h) on each of read_records().
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace loco {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it.
uint32_t crc32c(const void* data, size_t size);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

struct Scalar {
  std::string tag;
  float value = 0;
};

// Serialized tensorflow.Event messages.
std::string encode_file_version_event(double wall_time, const std::string& version);
std::string encode_scalars_event(double wall_time, int64_t step, const std::vector<Scalar>& values);
// `data` framed as one TFRecord (length, its masked CRC, data, its masked CRC).
std::string frame_record(const std::string& data);
// The data of each intact record of a TFRecord file, in order. Reading stops at the first torn
// or corrupt record (a crash mid-write), like read_metrics skips a torn last line.
std::vector<std::string> read_records(const std::string& path);

// Appends events to a new file `dir`/events.out.tfevents.<unix seconds>.<host>.<pid> (a ".N"
// suffix is added if that name is taken), creating `dir`. Each event is flushed as written, so
// a crash loses at most the record being written.
class EventWriter {
 public:
  explicit EventWriter(const std::string& dir);
  // One Event at `step` whose Summary holds `values` (nothing is written when it is empty).
  void write_scalars(int64_t step, const std::vector<Scalar>& values, double wall_time);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

// Rewrites each events.out.tfevents.* file in `dir` without the events whose step is past
// `keep_up_to_step` (and without a torn tail), so a resumed run's curves do not fold back.
void truncate_event_files(const std::string& dir, int64_t keep_up_to_step);

}  // namespace loco

// A lease of training data in a coordinated run (docs/data.md, "Data in a coordinated run"): the
// permutation positions a member of the coordinator reads next, as ranges [begin, end) of an
// epoch's position space, read in order. The coordinator hands leases out (src/coord/data_plan.h);
// the worker's DataLoader reads them (loader.h); a site's rank 0 hands its lease to its ranks as
// text (to_text / from_text). Plain types: no networking, no torch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace loco {

struct LeaseRange {
  int64_t epoch = 0, begin = 0, end = 0;  // positions [begin, end) of epoch `epoch`'s permutation
  int64_t size() const { return end - begin; }
  bool operator==(const LeaseRange& o) const {
    return epoch == o.epoch && begin == o.begin && end == o.end;
  }
};

struct DataLease {
  int64_t id = 0;  // 0: none (a worker that holds no lease yet)
  std::vector<LeaseRange> ranges;

  int64_t size() const {
    int64_t n = 0;
    for (const auto& r : ranges) n += r.size();
    return n;
  }
  // The k-th position of the lease: (epoch, position). Throws std::out_of_range past its end.
  std::pair<int64_t, int64_t> at(int64_t k) const {
    for (const auto& r : ranges) {
      if (k < r.size()) return {r.epoch, r.begin + k};
      k -= r.size();
    }
    throw std::out_of_range("position " + std::to_string(k) + " is past the data lease's " +
                            std::to_string(size()) + " windows");
  }
  // Entries [from, to) of the lease as ranges.
  std::vector<LeaseRange> slice(int64_t from, int64_t to) const {
    std::vector<LeaseRange> out;
    int64_t k = 0;
    for (const auto& r : ranges) {
      int64_t a = std::max(from, k), b = std::min(to, k + r.size());
      if (a < b) out.push_back({r.epoch, r.begin + (a - k), r.begin + (b - k)});
      k += r.size();
    }
    return out;
  }

  // "id n epoch begin end ..." and back (a site's ranks get their lease this way).
  std::string to_text() const {
    std::ostringstream s;
    s << id << ' ' << ranges.size();
    for (const auto& r : ranges) s << ' ' << r.epoch << ' ' << r.begin << ' ' << r.end;
    return s.str();
  }
  static DataLease from_text(const std::string& text) {
    std::istringstream s(text);
    DataLease lease;
    size_t n = 0;
    if (!(s >> lease.id >> n)) throw std::invalid_argument("bad data lease text '" + text + "'");
    for (size_t i = 0; i < n; ++i) {
      LeaseRange r;
      if (!(s >> r.epoch >> r.begin >> r.end) || r.end < r.begin)
        throw std::invalid_argument("bad data lease text '" + text + "'");
      lease.ranges.push_back(r);
    }
    return lease;
  }
};

}  // namespace loco

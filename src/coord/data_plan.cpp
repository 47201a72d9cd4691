// The coordinator's data assignment: leases of permutation positions (see data_plan.h).
#include "data_plan.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "loco/coordinator.h"

namespace loco {

DataLease DataPlan::claim(const std::string& holder, int64_t lease_id, int64_t consumed,
                          int64_t want, int64_t windows, const DataSeats& seats,
                          const std::vector<LeaseRange>& resume) {
  if (windows < 1 || (windows_ > 0 && windows != windows_))
    throw CoordError(CoordError::kInvalidArgument,
                     "this worker's corpus has " + std::to_string(windows) +
                         " windows an epoch; the run's data plan has " + std::to_string(windows_) +
                         " (data.train or model.seq_len differs)");
  if (want < 1)
    throw CoordError(CoordError::kInvalidArgument,
                     "a data claim for " + std::to_string(want) + " windows (must be positive)");
  windows_ = windows;
  std::vector<LeaseRange> ranges;
  auto it = held_.find(holder);
  if (it != held_.end()) {
    Holding& h = it->second;
    if (lease_id != h.lease.id) {  // a new session under the name: the old one vanished
      release(holder, h.lease.id, -1);
    } else {
      const int64_t size = h.lease.size();
      if (consumed < h.consumed || consumed > size)
        throw CoordError(CoordError::kInvalidArgument,
                         "a data claim reports " + std::to_string(consumed) + " windows read of " +
                             "lease " + std::to_string(lease_id) + ", which holds " +
                             std::to_string(size) + " (" + std::to_string(h.consumed) +
                             " reported before)");
      count_read(h.lease, h.consumed, consumed);
      ranges = h.lease.slice(consumed, size);  // what it has not read yet comes first
      held_.erase(it);
    }
  }
  if (!resume.empty() && (ranges == resume || (ranges.empty() && take_exact(resume)))) {
    DataLease lease{next_id_++, resume};
    held_[holder] = {lease, 0, 0};
    return lease;
  }
  // Then the seat's reservation for this round (made at the round's first claim), or for the
  // round before when it names that one (a member that claims the next round's data before its
  // push can name round r + 1 before a slower one claimed round r).
  if (seats.seat >= 0 && !seats.sizes.empty()) {
    const bool previous = seats.round == previous_round_ && seats.round >= 0;
    if (!previous && seats.round != reserved_round_) reserve(seats);
    auto& pool = previous ? previous_ : reserved_;
    auto mine = pool.find(seats.seat);
    if (mine != pool.end()) {
      for (const auto& r : mine->second) ranges.push_back(r);
      pool.erase(mine);
    }
  }
  int64_t have = 0;
  for (const auto& r : ranges) have += r.size();
  if (have > want) {  // more left than it asks for: the excess goes back
    DataLease left{0, ranges};
    give_back(left.slice(want, have));
    ranges = left.slice(0, want);
    have = want;
  }
  for (const auto& r : take(want - have)) ranges.push_back(r);
  DataLease lease{next_id_++, ranges};
  held_[holder] = {lease, 0, 0};
  return lease;
}

bool DataPlan::release(const std::string& holder, int64_t lease_id, int64_t consumed, bool keep) {
  auto it = held_.find(holder);
  if (it == held_.end() || it->second.lease.id != lease_id) return false;
  Holding& h = it->second;
  const int64_t size = h.lease.size();
  consumed = consumed < 0 ? h.consumed : std::clamp(consumed, h.consumed, size);
  count_read(h.lease, h.consumed, consumed);
  if (keep) {
    h.consumed = consumed;
    h.orphan_until = std::numeric_limits<double>::infinity();
    spdlog::info("coordinator: {} keeps its lease over the pause ({} of {} windows read)", holder,
                 consumed, size);
    return true;
  }
  give_back(h.lease.slice(consumed, size));
  spdlog::info("coordinator: {} gave back {} of its {} data windows", holder, size - consumed,
               size);
  held_.erase(it);
  return true;
}

bool DataPlan::sweep(const std::set<std::string>& live, double now) {
  std::vector<std::string> gone;
  for (const auto& [holder, h] : held_)
    if (!live.count(holder) && now >= h.orphan_until) gone.push_back(holder);
  for (const auto& holder : gone) release(holder, held_.at(holder).lease.id, -1);
  return !gone.empty();
}

void DataPlan::count_read(const DataLease& lease, int64_t from, int64_t to) {
  for (const auto& r : lease.slice(from, to)) {
    int64_t& n = read_[r.epoch];
    n += r.size();
    if (n == windows_) {
      ++epochs_done_;
      read_.erase(r.epoch);
      spdlog::info("coordinator: data epoch {} read whole ({} windows, each once)", r.epoch,
                   windows_);
    }
  }
}

void DataPlan::give_back(const std::vector<LeaseRange>& ranges) {
  for (const auto& r : ranges)
    if (r.size() > 0) free_.push_back(r);
  std::sort(free_.begin(), free_.end(), [](const LeaseRange& a, const LeaseRange& b) {
    return a.epoch != b.epoch ? a.epoch < b.epoch : a.begin < b.begin;
  });
  // Adjacent ranges of one epoch merge, so the list stays as short as the gaps it describes.
  std::vector<LeaseRange> merged;
  for (const auto& r : free_) {
    if (!merged.empty() && merged.back().epoch == r.epoch && merged.back().end == r.begin)
      merged.back().end = r.end;
    else
      merged.push_back(r);
  }
  free_ = std::move(merged);
}

bool DataPlan::take_exact(const std::vector<LeaseRange>& ranges) {
  std::vector<LeaseRange> left = free_;
  for (const auto& r : ranges) {
    auto in = std::find_if(left.begin(), left.end(), [&](const LeaseRange& f) {
      return f.epoch == r.epoch && f.begin <= r.begin && r.end <= f.end;
    });
    if (r.size() <= 0 || in == left.end()) return false;
    const LeaseRange f = *in;
    in = left.erase(in);
    if (r.end < f.end) in = left.insert(in, {f.epoch, r.end, f.end});
    if (f.begin < r.begin) left.insert(in, {f.epoch, f.begin, r.begin});
  }
  free_ = std::move(left);
  return true;
}

// `n` positions: from the free list first (oldest first), then fresh ones.
std::vector<LeaseRange> DataPlan::take(int64_t n) {
  std::vector<LeaseRange> out;
  while (n > 0 && !free_.empty()) {
    LeaseRange& r = free_.front();
    int64_t k = std::min(n, r.size());
    out.push_back({r.epoch, r.begin, r.begin + k});
    r.begin += k, n -= k;
    if (r.size() == 0) free_.erase(free_.begin());
  }
  while (n > 0) {
    int64_t k = std::min(n, windows_ - next_);
    out.push_back({epoch_, next_, next_ + k});
    next_ += k, n -= k;
    if (next_ == windows_) ++epoch_, next_ = 0;
  }
  return out;
}

// A new round: the unclaimed reservations of the round before the last go back (the last round's
// wait one round more), then each seat in order gets its size from the free list (oldest first)
// and fresh positions.
void DataPlan::reserve(const DataSeats& seats) {
  for (const auto& [seat, ranges] : previous_) give_back(ranges);
  previous_ = std::move(reserved_);
  previous_round_ = reserved_round_;
  reserved_.clear();
  reserved_round_ = seats.round;
  for (size_t i = 0; i < seats.sizes.size(); ++i)
    if (seats.sizes[i] > 0) reserved_[int64_t(i)] = take(seats.sizes[i]);
}

std::vector<LeaseRange> DataPlan::reserved(int64_t seat) const {
  auto it = reserved_.find(seat);
  return it == reserved_.end() ? std::vector<LeaseRange>{} : it->second;
}

int64_t DataPlan::read_in(int64_t epoch) const {
  if (epoch < epochs_done_ && !read_.count(epoch)) return windows_;
  auto it = read_.find(epoch);
  return it == read_.end() ? 0 : it->second;
}

const DataLease* DataPlan::lease_of(const std::string& holder) const {
  auto it = held_.find(holder);
  return it == held_.end() ? nullptr : &it->second.lease;
}

namespace {
nlohmann::json ranges_json(const std::vector<LeaseRange>& ranges) {
  auto j = nlohmann::json::array();
  for (const auto& r : ranges) j.push_back({r.epoch, r.begin, r.end});
  return j;
}
std::vector<LeaseRange> ranges_of(const nlohmann::json& j) {
  std::vector<LeaseRange> out;
  for (const auto& r : j) out.push_back({r.at(0).get<int64_t>(), r.at(1), r.at(2)});
  return out;
}
}  // namespace

nlohmann::json DataPlan::to_json() const {
  nlohmann::json held = nlohmann::json::object();
  for (const auto& [holder, h] : held_)
    held[holder] = {
        {"id", h.lease.id}, {"ranges", ranges_json(h.lease.ranges)}, {"consumed", h.consumed}};
  nlohmann::json read = nlohmann::json::object();
  for (const auto& [epoch, n] : read_) read[std::to_string(epoch)] = n;
  auto seats_json = [](const std::map<int64_t, std::vector<LeaseRange>>& by_seat) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [seat, ranges] : by_seat) j[std::to_string(seat)] = ranges_json(ranges);
    return j;
  };
  return {{"format", "loco-data-plan"},
          {"version", 1},
          {"windows", windows_},
          {"epoch", epoch_},
          {"next", next_},
          {"next_id", next_id_},
          {"epochs_done", epochs_done_},
          {"free", ranges_json(free_)},
          {"held", held},
          {"read", read},
          {"reserved_round", reserved_round_},
          {"reserved", seats_json(reserved_)},
          {"previous_round", previous_round_},
          {"previous", seats_json(previous_)}};
}

DataPlan DataPlan::from_json(const nlohmann::json& j, double now, double grace_s) {
  if (j.value("format", "") != "loco-data-plan" || j.value("version", 0) != 1)
    throw std::runtime_error("not a loco data plan (format loco-data-plan, version 1)");
  DataPlan p;
  p.windows_ = j.at("windows"), p.epoch_ = j.at("epoch"), p.next_ = j.at("next");
  p.next_id_ = j.at("next_id"), p.epochs_done_ = j.at("epochs_done");
  p.free_ = ranges_of(j.at("free"));
  for (const auto& [holder, h] : j.at("held").items())
    p.held_[holder] = {DataLease{h.at("id"), ranges_of(h.at("ranges"))}, h.at("consumed"),
                       now + grace_s};
  for (const auto& [epoch, n] : j.at("read").items()) p.read_[std::stoll(epoch)] = n;
  p.reserved_round_ = j.value("reserved_round", int64_t(-1));  // absent in plans saved before
  if (j.contains("reserved"))
    for (const auto& [seat, ranges] : j.at("reserved").items())
      p.reserved_[std::stoll(seat)] = ranges_of(ranges);
  p.previous_round_ = j.value("previous_round", int64_t(-1));  // absent in plans saved before
  if (j.contains("previous"))
    for (const auto& [seat, ranges] : j.at("previous").items())
      p.previous_[std::stoll(seat)] = ranges_of(ranges);
  return p;
}

nlohmann::json DataPlan::summary() const {
  int64_t free = 0;
  for (const auto& r : free_) free += r.size();
  int64_t reserved = 0;
  for (const auto* pool : {&reserved_, &previous_})
    for (const auto& [seat, ranges] : *pool)
      for (const auto& r : ranges) reserved += r.size();
  return {{"windows_per_epoch", windows_},
          {"epochs_read", epochs_done_},
          {"epoch", epoch_},
          {"next_position", next_},
          {"free_windows", free},
          {"reserved_windows", reserved}};
}

}  // namespace loco

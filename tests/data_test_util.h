// Helpers of the data suites (test_data, test_shards, test_prepare): a fresh directory per test
// under one directory of this process's own, removed when the run ends; whole files written and
// read; random tokens; and expect_error, which checks the message of what a call throws.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace loco::testing {

inline std::filesystem::path data_temp_root() {
  return std::filesystem::path(::testing::TempDir()) /
         ("loco_test_data_" + std::to_string(::getpid()));
}

// Removes every test's directory when the run ends.
struct RemoveDataTempRoot : ::testing::Environment {
  void TearDown() override { remove_tree(data_temp_root()); }
};
inline const auto* const kRemoveDataTempRoot =
    ::testing::AddGlobalTestEnvironment(new RemoveDataTempRoot);

// A fresh directory per test (or per suite, outside a test).
inline std::filesystem::path make_temp_dir() {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name() : "suite";
  std::filesystem::path dir = data_temp_root() / name;
  remove_tree(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// n tokens drawn uniformly from 0..vocab-1 with a fixed seed.
inline std::vector<int32_t> random_tokens(size_t n, int32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = dist(rng);
  return tokens;
}

// Expects `fn` to throw E with a message that contains every one of `parts`.
template <typename E>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception thrown";
  } catch (const E& e) {
    for (const auto& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message: " << e.what() << "\nmissing: " << part;
    }
  }
}

}  // namespace loco::testing

// Helpers shared by loco's tests: temporary directories, running the real binary and the
// reference Python scripts, and tensor dumps that Python's torch.load reads.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace loco::testing {

// A fresh, empty directory under the system temp dir, named after the running test.
inline std::string temp_dir(const std::string& tag = "") {
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string("loco_") + (info ? info->test_suite_name() + std::string("_") + info->name() : "suite") + tag;
  auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output and exit status.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) result.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The `loco` binary of this build, with arguments.
inline CommandResult run_loco(const std::string& args) {
  return run_command(std::string(LOCO_BINARY) + " " + args);
}

// Runs a Python script of the project with Debian's python3-torch.
inline CommandResult run_python(const std::string& script_and_args) {
  return run_command(std::string(LOCO_PYTHON) + " " + LOCO_SOURCE_DIR + "/" + script_and_args);
}

// A string -> IValue dictionary, as Python's torch.load reads it.
inline c10::impl::GenericDict make_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

inline c10::impl::GenericDict tensor_dict(const std::map<std::string, torch::Tensor>& tensors) {
  auto d = make_dict();
  for (const auto& [k, v] : tensors) d.insert(k, v.detach().clone());
  return d;
}

inline void save_dump(const std::string& path, const c10::impl::GenericDict& dict) {
  auto bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace loco::testing

// `loco launch --emit DIR` (plan.h): writes config.yaml (a copy of the run's config file),
// plan.txt (what --dry-run prints) and the scripts of emit.h into DIR, each atomically, the
// scripts executable. DIR may be new, empty, or hold only files an earlier --emit wrote: those
// are replaced, and those this plan does not write are removed, so that DIR describes one plan;
// anything else in DIR is refused before a file is written.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "emit.h"

namespace fs = std::filesystem;

namespace loco::launcher {
namespace {

bool emitted_name(const std::string& n) {
  auto ends = [&](const std::string& tail) {
    return n.size() > tail.size() && n.compare(n.size() - tail.size(), tail.size(), tail) == 0;
  };
  return n == "coordinator.sh" || n == "config.yaml" || n == "plan.txt" ||
         (n.rfind("site-", 0) == 0 && (ends(".sh") || ends(".sbatch"))) ||
         (n.front() == '.' && ends(".tmp"));
}

// DIR may be new, empty, or hold only what an earlier --emit wrote; returns those files.
std::vector<fs::path> earlier_files(const std::string& dir) {
  std::vector<fs::path> files;
  if (!fs::exists(dir)) return files;
  if (!fs::is_directory(dir)) throw ConfigError("--emit " + dir + ": not a directory");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (!e.is_regular_file() || !emitted_name(name))
      throw ConfigError("--emit " + dir + ": it holds " + name +
                        ", which --emit did not write; give a new or empty directory (the files "
                        "of an earlier --emit are replaced)");
    files.push_back(e.path());
  }
  return files;
}

// Written next to its place, then renamed over it.
void write_atomically(const std::string& dir, const Emitted& f) {
  fs::path tmp = fs::path(dir) / ("." + f.name + ".tmp"), path = fs::path(dir) / f.name;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << f.text;
    out.close();
    if (!out) throw ConfigError("--emit: cannot write " + tmp.string());
  }
  ::chmod(tmp.c_str(), f.executable ? 0755 : 0644);
  fs::rename(tmp, path);
}

}  // namespace

void emit_scripts(const Config& config, const std::vector<Part>& parts, const LaunchOptions& o,
                  bool scheduled) {
  const std::string& dir = o.emit_dir;
  auto earlier = earlier_files(dir);
  std::ifstream in(o.config_path, std::ios::binary);
  std::stringstream config_text;
  config_text << in.rdbuf();
  if (!in) throw ConfigError(o.config_path + ": cannot read the config file to copy it");
  std::ostringstream plan;
  print_dry_run(plan, config, parts, scheduled);
  std::vector<Emitted> files = {
      {"config.yaml",
       "# " + o.config_path + ", copied by `loco launch --emit`\n" + config_text.str(), false},
      {"plan.txt", plan.str(), false}};
  for (auto& f : emitted_scripts(config, parts, scheduled)) files.push_back(std::move(f));

  fs::create_directories(dir);
  for (const auto& f : files) write_atomically(dir, f);
  for (const auto& old : earlier) {
    bool kept = false;
    for (const auto& f : files) kept = kept || old.filename() == f.name;
    if (!kept) fs::remove(old);
  }
  std::cout << "emitted into " << dir << ":";
  for (const auto& f : files) std::cout << " " << f.name;
  std::cout << "\n"
            << (parts.front().label == "coord"
                    ? "start coordinator.sh first, then every site's script (site-NAME.sh on a "
                      "machine, or sbatch site-NAME.sbatch) with LOCO_COORDINATOR=HOST:PORT of "
                      "the coordinator\n"
                    : "start the site's script (site-NAME.sh on a machine, or sbatch "
                      "site-NAME.sbatch)\n");
}

}  // namespace loco::launcher

// `loco compare`'s plots through gnuplot: which plots (val loss against tokens, wall-clock time
// and, when any run sent bytes, bytes on a log scale), the script that draws them with every
// run's curve inline, and running gnuplot on it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "loco/compare.h"

namespace loco::gnuplot {

struct Plot {
  std::string name, title, xlabel, x;  // x: a gnuplot `using` expression for the x column
  bool log_x = false;
  std::string x_format;
};

// The plots for `runs`: the time axis in s, min or h by the longest run; no bytes plot (warned)
// when no run communicated anything.
std::vector<Plot> plots_for(const std::vector<RunData>& runs);

// The gnuplot script: every run's curve as an inline data block, then each plot in PNG and SVG.
std::string script(const std::vector<RunData>& runs, const std::vector<Plot>& plots);

// Runs gnuplot on `script` in `dir`. Throws CompareError when it is missing or fails.
void run(const std::string& gnuplot, const std::filesystem::path& dir, const std::string& script);

}  // namespace loco::gnuplot

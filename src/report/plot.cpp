// `loco compare`'s plots (plot.h): the plot list, the gnuplot script with the curves inline, and
// gnuplot run on it in the output directory.
#include "plot.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <sstream>

#include <sys/wait.h>

namespace fs = std::filesystem;

namespace loco::gnuplot {
namespace {

std::string exact(double v) {  // all 17 digits: the data blocks lose nothing
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string gnuplot_string(const std::string& s) {  // single-quoted: only ' is special
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

constexpr int kPointTypes[] = {7, 5, 9, 13, 11, 15};  // gnuplot's filled circle, square, ...

}  // namespace

std::vector<Plot> plots_for(const std::vector<RunData>& runs) {
  double max_wall = 0;
  bool any_bytes = false;
  for (const auto& r : runs) {
    max_wall = std::max(max_wall, r.wall_s);
    any_bytes = any_bytes || r.bytes_total > 0;
  }
  const bool minutes = max_wall > 600, hours = max_wall > 3 * 3600;
  std::vector<Plot> plots = {{"val_loss_vs_tokens", "val loss vs tokens",
                              "tokens processed (all workers)", "$1", false, "%.1s%c"},
                             {"val_loss_vs_time", "val loss vs wall-clock time",
                              std::string("wall-clock time (") +
                                  (hours     ? "h"
                                   : minutes ? "min"
                                             : "s") +
                                  ")",
                              hours     ? "$2/3600"
                              : minutes ? "$2/60"
                                        : "$2",
                              false, "%g"}};
  if (any_bytes)
    plots.push_back({"val_loss_vs_bytes", "val loss vs bytes communicated",
                     "bytes communicated (cumulative, all workers, up + down; log scale)",
                     "$3 > 0 ? $3 : NaN", true, "%.0s %cB"});
  else
    spdlog::warn("no run communicated any bytes: no val_loss_vs_bytes plot");
  return plots;
}

std::string script(const std::vector<RunData>& runs, const std::vector<Plot>& plots) {
  std::ostringstream s;
  s << "# Written by `loco compare`; run `gnuplot compare.gp` in this directory to redraw.\n"
    << "set encoding utf8\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    s << "$run" << i << " << EOD\n# tokens wall_s bytes val_loss val_bpb  (" << runs[i].dir
      << ")\n";
    for (const auto& p : runs[i].curve)
      s << exact(p.tokens) << ' ' << exact(p.wall_s) << ' ' << exact(p.bytes) << ' '
        << exact(p.val_loss) << ' ' << exact(p.val_bpb) << "\n";
    s << "EOD\n";
  }
  s << "set grid lc rgb '#dddddd'\nset key outside right top vertical Left reverse box\nset border "
       "3\n"
    << "set tics nomirror\nset ylabel 'val loss (nats per token)'\n";
  for (const auto& plot : plots) {
    s << "\n# " << plot.title << "\n"
      << "set title " << gnuplot_string(plot.title) << "\n"
      << "set xlabel " << gnuplot_string(plot.xlabel) << "\n"
      << (plot.log_x ? "set logscale x 10\nset xrange [*:*]\n"
                     : "unset logscale x\nset xrange [0:*]\n")
      << "set format x " << gnuplot_string(plot.x_format) << "\n";
    std::string command = "plot";
    const char* sep = " ";
    for (size_t i = 0; i < runs.size(); ++i) {
      if (plot.log_x && !(runs[i].bytes_total > 0)) continue;  // sent nothing: no point on log x
      command += sep + std::string("$run") + std::to_string(i) + " using (" + plot.x +
                 "):4 with linespoints lt " + std::to_string(i % 8 + 1) +  // same colour everywhere
                 " lw 2 pt " + std::to_string(kPointTypes[i % 6]) + " ps 0.8 title " +
                 gnuplot_string(runs[i].label);
      sep = ", \\\n     ";
    }
    for (const char* term : {"png", "svg"}) {
      if (std::string(term) == "png")
        s << "set terminal pngcairo size 1100,600 noenhanced font 'sans,11'\n";
      else
        s << "set terminal svg size 1100,600 dynamic noenhanced font 'sans,11' background "
             "'white'\n";
      s << "set output '" << plot.name << "." << term << "'\n" << command << "\nunset output\n";
    }
  }
  return s.str();
}

void run(const std::string& gnuplot, const fs::path& dir, const std::string& script) {
  std::string command =
      "cd " + shell_quote(dir.string()) + " && " + shell_quote(gnuplot) + " " + script + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw CompareError("cannot start a shell for gnuplot");
  std::string output;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) output.append(buf.data(), n);
  int status = ::pclose(pipe);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string where = "; table.md and " + script + " are written in " + dir.string();
  if (code == 127)
    throw CompareError("gnuplot not found ('" + gnuplot +
                       "'): install Debian's gnuplot-nox (apt-get install gnuplot-nox), then run "
                       "`gnuplot " +
                       script + "` there or `loco compare` again" + where);
  if (code != 0)
    throw CompareError("gnuplot failed (exit " + std::to_string(code) +
                       "): " + output.substr(0, 400) + where);
  if (!output.empty())
    spdlog::warn("gnuplot: {}", output.substr(0, output.find_last_not_of('\n') + 1));
}

}  // namespace loco::gnuplot

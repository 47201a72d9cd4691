// The text of the files `loco launch --emit DIR` writes (emit_scripts.cpp), and where emit.cpp
// writes them.
#pragma once

#include <string>
#include <vector>

#include "plan.h"

namespace loco::launcher {

struct Emitted {
  std::string name;  // in DIR
  std::string text;
  bool executable = true;
};

// coordinator.sh (when the run has a coordinator), then site-NAME.sh and site-NAME.sbatch for
// every site of `parts` (Part::site), in plan order.
std::vector<Emitted> emitted_scripts(const Config& config, const std::vector<Part>& parts,
                                     bool scheduled);

}  // namespace loco::launcher

// Small file helpers shared across loco.
#pragma once

#include <string>

namespace loco {

// Writes `text` to `path` atomically: a temporary file beside it, fsynced, then renamed, so that
// a reader sees the old file or the whole new one. Throws std::runtime_error naming the path.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace loco

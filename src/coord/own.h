// Copy-on-write of the coordinator's global state (src/coord/coordinator*.cpp).
#pragma once

#include <torch/torch.h>

namespace loco {

// A pull still streaming the state or an evaluation still reading it holds a reference to its
// storage; the step then writes a copy and they keep the old one. (A copy of the Tensor shares
// its TensorImpl; a view shares only the storage.)
inline void own(torch::Tensor& state) {
  if (state.use_count() > 1 || state.storage().use_count() > 1) state = state.clone();
}

}  // namespace loco

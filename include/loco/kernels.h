// Fused pieces of the GPT's step, as autograd functions with hand-written backwards.
//
// Each computes the same math as the plain ATen composition it replaces (tests/test_model's
// golden test checks the whole model against PyTorch) but makes fewer passes over memory and
// fewer large allocations, which is what dominates a CPU step outside the matmuls
// (docs/performance.md). None supports double backward.
#pragma once

#include <torch/types.h>

namespace loco {

// Mean cross-entropy of softcap(x @ w^T) against target, softcap(z) = c * tanh(z / c) (none
// when softcap <= 0). x: [N, C] float32, w: [V, C], target: [N] int64 in [0, V).
// Works through the rows in chunks, so the [N, V] logits never exist at once: each chunk's
// logits become its gradient in place, and x's and w's gradients are accumulated in the
// forward pass when grad mode is on (backward only scales them). Under autocast (precision.h)
// the two matmuls of each chunk run in autocast's dtype; logits, softmax, the loss and the
// gradients of x and w stay x's dtype (fp32).
torch::Tensor head_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& target,
                        double softcap);

// x * rsqrt(mean(x², -1) + 1e-6); backward rsqrt * (g - y * mean(g * y, -1)).
torch::Tensor rms_norm(const torch::Tensor& x);

// Rotary embedding: the halves (x1, x2) of the last dimension become (x1 cos + x2 sin,
// x2 cos - x1 sin); backward is the rotation by the opposite angle. x: [B, T, H, D] (any
// strides), cos, sin: broadcastable to [B, T, H, D/2], cast to x's dtype when it differs (a
// bf16 x under autocast). Returns a contiguous tensor of x's dtype.
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// relu(x)²; backward 2 * relu(x) * g.
torch::Tensor relu_square(const torch::Tensor& x);

}  // namespace loco

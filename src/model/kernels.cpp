// Fused autograd functions of the GPT (see include/loco/kernels.h).
#include "loco/kernels.h"

#include <torch/torch.h>

#include <algorithm>

#include "loco/precision.h"

namespace loco {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of the head's logits handled at once. Measured on the tiny config (V = 4096): 512 rows
// (8 MiB of logits) beat 128, 256 and 1024 (fewer, larger matmuls vs. a chunk that stays in cache).
constexpr int64_t kHeadChunkRows = 512;

struct HeadLoss : torch::autograd::Function<HeadLoss> {
  // `dtype`: what the matmuls compute in (kFloat, or autocast's bfloat16). The logits, the
  // softmax and the gradients' accumulation stay fp32 either way.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& target, double softcap, bool need_grad,
                               c10::ScalarType dtype) {
    const int64_t N = x.size(0);
    const bool low = dtype != x.scalar_type();
    auto wc = low ? w.to(dtype) : w;
    auto losses = torch::empty({N}, x.options());
    torch::Tensor dx, dw;
    if (need_grad) {
      dx = torch::empty_like(x);
      dw = torch::zeros_like(w);
    }
    for (int64_t r0 = 0; r0 < N; r0 += kHeadChunkRows) {
      const int64_t R = std::min(kHeadChunkRows, N - r0);
      auto xc = low ? x.narrow(0, r0, R).to(dtype) : x.narrow(0, r0, R);
      auto idx = target.narrow(0, r0, R).unsqueeze(1);
      auto z = torch::mm(xc, wc.t());  // [R, V]
      if (low) z = z.to(x.scalar_type());
      auto y = z;
      if (softcap > 0) {
        z.div_(softcap).tanh_();  // z holds t = tanh(z / c) from here on
        y = z * softcap;
      }
      auto logp = torch::log_softmax(y, -1);
      losses.narrow(0, r0, R).copy_(logp.gather(1, idx).squeeze(1).neg_());
      if (!need_grad) continue;
      // d(loss_row)/dy = softmax(y) - onehot(target); dy/dz = 1 - t².
      auto dz = logp.exp_();
      dz.scatter_add_(1, idx, torch::full({R, 1}, -1.0, dz.options()));
      if (softcap > 0) dz.mul_(z.mul_(z).neg_().add_(1.0));
      auto dxc = dx.narrow(0, r0, R);
      if (low) {
        auto dzc = dz.to(dtype);
        dxc.copy_(torch::mm(dzc, wc));
        dw.add_(torch::mm(dzc.t(), xc));
      } else {
        torch::mm_out(dxc, dz, w);
        dw.addmm_(dz.t(), xc);
      }
    }
    ctx->save_for_backward({dx, dw});
    return losses.mean();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved[0].defined(), "head_loss: backward through a forward run without grad mode");
    auto scale = grads[0] / double(saved[0].size(0));  // the mean's 1/N times the incoming grad
    return {saved[0] * scale, saved[1] * scale, {}, {}, {}, {}};
  }
};

struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x) {
    auto rstd = x.square().mean(-1, /*keepdim=*/true).add_(1e-6).rsqrt_();
    auto y = x * rstd;
    ctx->save_for_backward({y, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &g = grads[0], &y = saved[0], &rstd = saved[1];
    auto gy_mean = (g * y).mean(-1, /*keepdim=*/true);
    return {torch::addcmul(g, y, gy_mean, -1.0).mul_(rstd)};
  }
};

// (x1 cos + s x2 sin, x2 cos - s x1 sin) for the halves of x's last dimension; s = +1 or -1.
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                     double s) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto out = torch::empty(x.sizes(), x.options());
  auto o1 = out.narrow(-1, 0, half), o2 = out.narrow(-1, half, half);
  // Products rounded before the sum (no addcmul_), as in x1 * cos + x2 * sin: ATen's
  // vectorised and scalar loops would otherwise round differently for different lengths.
  torch::mul_out(o1, x1, cos).add_(x2 * sin, s);
  torch::mul_out(o2, x2, cos).add_(x1 * sin, -s);
  return out;
}

struct Rotary : torch::autograd::Function<Rotary> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, 1.0);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    return {rotate(grads[0], saved[0], saved[1], -1.0), {}, {}};
  }
};

struct ReluSquare : torch::autograd::Function<ReluSquare> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x) {
    auto r = torch::relu(x);
    ctx->save_for_backward({r});
    return r.square();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto r = ctx->get_saved_variables()[0];
    return {(grads[0] * r).mul_(2.0)};
  }
};

}  // namespace

torch::Tensor head_loss(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& target,
                        double softcap) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "head_loss: x [N, C] and ",
              "w [V, C] expected, got ", x.sizes(), " and ", w.sizes());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == x.size(0), "head_loss: target [", x.size(0),
              "] expected, got ", target.sizes());
  bool need_grad = torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad());
  c10::ScalarType dtype = autocast_dtype(x.device()).value_or(x.scalar_type());
  return HeadLoss::apply(x, w, target, softcap, need_grad, dtype);
}

torch::Tensor rms_norm(const torch::Tensor& x) {
  return RmsNorm::apply(x);
}

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // Under autocast x is bf16: rotate it in bf16 rather than promote it through fp32 tables.
  if (cos.scalar_type() != x.scalar_type())
    return Rotary::apply(x, cos.to(x.scalar_type()), sin.to(x.scalar_type()));
  return Rotary::apply(x, cos, sin);
}

torch::Tensor relu_square(const torch::Tensor& x) {
  return ReluSquare::apply(x);
}

}  // namespace loco

// at_loss: argument checks and the math shared by the CPU and CUDA kernels of
// the attention-transfer loss (Zagoruyko & Komodakis). For each (student,
// teacher) pair of feature maps [B, C, H, W] the attention map is
//   v[b, hw] = mean_c |x[b, c, hw]|^p,   a[b] = v[b] / max(||v[b]||_2, eps),
// and the pair's loss is mean over (b, hw) of (a_s - a_t)^2; pairs are summed.
// As in fastnas/ops/_reference.py::at_loss, the teacher receives no gradient.
#pragma once

#include <cmath>
#include <vector>

#include "checks.h"

namespace fastnas {

// Norm floor of F.normalize (fastnas/ops/_reference.py::NORMALIZE_EPS).
constexpr double kAtNormalizeEps = 1e-12;

// Which |x|^p the kernels compute; p = 2 and p = 1 get exact, pow-free code.
enum class AtPower { General = 0, One = 1, Two = 2 };

// Sizes of one (student, teacher) pair; HW = H * W.
struct AtPairShape {
  int64_t batch, student_channels, teacher_channels, spatial;
  int64_t rows() const { return batch * spatial; }
};

struct AtLossPlan {
  AtPower power;
  std::vector<AtPairShape> pairs;
};

inline AtPower at_power_of(double p) {
  return p == 2.0 ? AtPower::Two : (p == 1.0 ? AtPower::One : AtPower::General);
}

// Validates the arguments of at_loss / at_loss_backward (the same checks in
// both, and on every backend) and returns the per-pair sizes.
inline AtLossPlan check_at_loss_inputs(at::TensorList student, at::TensorList teacher, double p,
                                       bool allow_half) {
  // d|x|^p/dx = p |x|^(p-1) sign(x) has no limit at x = 0 for p < 1 (it blows
  // up), so such p would give inf/NaN gradients wherever a feature is 0 (ReLU).
  TORCH_CHECK(std::isfinite(p) && p >= 1.0, "p: expected a finite number >= 1 (the gradient of |x|^p ",
              "at 0 is undefined for p < 1), got ", p);
  TORCH_CHECK(!student.empty(), "student: expected at least one (student, teacher) pair, got an empty list");
  TORCH_CHECK(teacher.size() == student.size(), "teacher: expected one tensor per student tensor (",
              student.size(), "), got ", teacher.size());
  AtLossPlan plan;
  plan.power = at_power_of(p);
  for (size_t i = 0; i < student.size(); ++i) {
    const auto s_name = indexed("student", i), t_name = indexed("teacher", i);
    const at::Tensor& s = student[i];
    const at::Tensor& t = teacher[i];
    check_dim(s, s_name, 4, "[B, C, H, W]");
    check_dim(t, t_name, 4, "[B, C, H, W]");
    check_floating(s, s_name, allow_half);
    check_floating(t, t_name, allow_half);
    check_same_device(s, s_name, student[0], "student[0]");
    check_same_device(t, t_name, student[0], "student[0]");
    check_same_dtype(s, s_name, student[0], "student[0]");
    check_same_dtype(t, t_name, student[0], "student[0]");
    TORCH_CHECK(t.size(0) == s.size(0) && t.size(2) == s.size(2) && t.size(3) == s.size(3), t_name,
                ": expected the batch and spatial sizes (B, H, W) = (", s.size(0), ", ", s.size(2), ", ",
                s.size(3), ") of ", s_name, " (channels may differ), got shape ", t.sizes());
    plan.pairs.push_back({s.size(0), s.size(1), t.size(1), s.size(2) * s.size(3)});
  }
  return plan;
}

// Checks the incoming gradient of at_loss_backward: a 0-d tensor like the loss.
inline void check_at_loss_grad(const at::Tensor& grad, at::TensorList student) {
  check_dim(grad, "grad", 0, "(the gradient of the 0-d loss)");
  check_same_dtype(grad, "grad", student[0], "student[0]");
  check_same_device(grad, "grad", student[0], "student[0]");
}

// x^y in the argument's own precision: ::pow(float, float) may promote to the
// slower double pow on the host, so float calls powf explicitly.
FASTNAS_HOST_DEVICE float at_pow(float x, float y) { return ::powf(x, y); }
FASTNAS_HOST_DEVICE double at_pow(double x, double y) { return ::pow(x, y); }

// |x|^p.
template <AtPower kPower, typename acc_t>
FASTNAS_HOST_DEVICE acc_t at_abs_pow(acc_t x, acc_t p) {
  if (kPower == AtPower::Two) return x * x;
  const acc_t ax = x < 0 ? -x : x;
  if (kPower == AtPower::One) return ax;
  return at_pow(ax, p);
}

// d|x|^p/dx = p |x|^(p-1) sign(x), 0 at x = 0 (as torch's abs().pow() gives).
template <AtPower kPower, typename acc_t>
FASTNAS_HOST_DEVICE acc_t at_abs_pow_grad(acc_t x, acc_t p) {
  if (kPower == AtPower::Two) return x + x;
  const acc_t sign = x > 0 ? acc_t(1) : (x < 0 ? acc_t(-1) : acc_t(0));
  if (kPower == AtPower::One) return sign;
  return p * at_pow(x < 0 ? -x : x, p - acc_t(1)) * sign;
}

// The denominator of F.normalize: max(||v||, eps).
template <typename acc_t>
FASTNAS_HOST_DEVICE acc_t at_norm_floor(acc_t norm) {
  return norm < acc_t(kAtNormalizeEps) ? acc_t(kAtNormalizeEps) : norm;
}

// Gradient w.r.t. v of a = v / max(||v||, eps), given g = dL/da, n = a and
// n_dot_g = sum_hw n * g of the row. Where ||v|| >= eps (torch's clamp_min
// passes the gradient at equality) it is (g - n (n.g)) / ||v||, else g / eps.
template <typename acc_t>
FASTNAS_HOST_DEVICE acc_t at_normalize_grad(acc_t g, acc_t n, acc_t n_dot_g, acc_t norm) {
  if (norm >= acc_t(kAtNormalizeEps)) return (g - n * n_dot_g) / norm;
  return g / acc_t(kAtNormalizeEps);
}

}  // namespace fastnas

// pair_distance and gram_distance: argument checks and the math shared by the
// CPU and CUDA kernels (fastnas/ops/_reference.py is the specification).
//
// pair_distance works on rows of student/teacher features [B, D] -> [B] in at
// most two passes per row: an optional pre-pass (kl: the row maxima, for a
// stable softmax; pearson: the row sums, for the means), then one pass that
// accumulates kPairSums additive sums. pair_finalize turns the sums into the
// distance and the per-row coefficients of the gradient, pair_grad gives the
// gradient of one element pair from them. All sums are additive, so a CUDA
// block reduces them like a CPU loop does.
//
// gram_distance is made of GEMMs, so it is one device-generic function over
// ATen ops (at::mm and elementwise), registered by both backends.
#pragma once

#include <cmath>
#include <tuple>

#include "checks.h"

namespace fastnas {

enum class PairMetric { L1 = 0, L2 = 1, KL = 2, Cosine = 3, Pearson = 4 };
constexpr std::array<const char*, 5> kPairMetrics = {"l1", "l2", "kl", "cosine", "pearson"};

// Norm floor of the cosine and Pearson distances (as in F.cosine_similarity).
constexpr double kPairCosineEps = 1e-8;
// Norm floor of the Gram rows (F.normalize's default eps).
constexpr double kGramNormalizeEps = 1e-12;
// Number of additive sums per row.
constexpr int kPairSums = 5;

// ---------------------------------------------------------------- validation

inline PairMetric check_pair_distance_inputs(const at::Tensor& student, const at::Tensor& teacher,
                                             c10::string_view metric, bool allow_half) {
  check_dim(student, "student", 2, "[batch, features]");
  check_dim(teacher, "teacher", 2, "[batch, features]");
  check_floating(student, "student", allow_half);
  check_same_dtype(teacher, "teacher", student, "student");
  check_same_device(teacher, "teacher", student, "student");
  check_same_shape(teacher, "teacher", student, "student");
  // kl, cosine and pearson have no value for an empty feature vector.
  TORCH_CHECK(student.size(1) >= 1, "student: expected at least one feature (shape [batch, features >= 1]), ",
              "got shape ", student.sizes());
  return parse_option<PairMetric>(metric, "metric", kPairMetrics);
}

inline PairMetric check_pair_distance_backward_inputs(const at::Tensor& grad, const at::Tensor& student,
                                                      const at::Tensor& teacher, c10::string_view metric,
                                                      bool allow_half) {
  const auto m = check_pair_distance_inputs(student, teacher, metric, allow_half);
  check_dim(grad, "grad", 1, "[batch]");
  TORCH_CHECK(grad.size(0) == student.size(0), "grad: expected shape [", student.size(0),
              "] (the batch of student), got ", grad.sizes());
  check_same_dtype(grad, "grad", student, "student");
  check_same_device(grad, "grad", student, "student");
  return m;
}

inline void check_gram_distance_inputs(const at::Tensor& student, const at::Tensor& teacher, bool allow_half) {
  check_dim(student, "student", 2, "[batch, student_features]");
  check_dim(teacher, "teacher", 2, "[batch, teacher_features]");
  check_floating(student, "student", allow_half);
  check_same_dtype(teacher, "teacher", student, "student");
  check_same_device(teacher, "teacher", student, "student");
  TORCH_CHECK(teacher.size(0) == student.size(0), "teacher: expected ", student.size(0),
              " rows (the batch of student), got shape ", teacher.sizes());
}

// ---------------------------------------------------------------- pair_distance row math

// kl shifts each row by its maximum, pearson centres it on its mean; the others
// need no pre-pass.
FASTNAS_HOST_DEVICE bool pair_needs_pre_pass(PairMetric m) {
  return m == PairMetric::KL || m == PairMetric::Pearson;
}
// True when the pre-pass reduces with max (kl), false when it sums (pearson).
FASTNAS_HOST_DEVICE bool pair_pre_pass_is_max(PairMetric m) { return m == PairMetric::KL; }

// Adds one element pair (s, t) to the row sums; shift_s/shift_t come from the
// pre-pass (kl: row maxima; pearson: row means; otherwise 0).
//   l1:      [0] sum |s - t|
//   l2:      [0] sum (s - t)^2
//   kl:      [0] Z_s = sum e^(s - max s), [1] Z_t, [2] sum e^(t - max t) ((t - max t) - (s - max s))
//   cosine:  [0] s.t, [1] |s|^2, [2] |t|^2                      (on x = s, y = t)
//   pearson: the same on x = s - mean s, y = t - mean t, plus [3] sum x, [4] sum y
template <typename acc_t>
FASTNAS_HOST_DEVICE void pair_accumulate(PairMetric m, acc_t s, acc_t t, acc_t shift_s, acc_t shift_t,
                                         acc_t* sums) {
  switch (m) {
    case PairMetric::L1:
      sums[0] += ::fabs(s - t);  // not a ternary: random signs would mispredict a branch
      break;
    case PairMetric::L2:
      sums[0] += (s - t) * (s - t);
      break;
    case PairMetric::KL: {
      const acc_t xs = s - shift_s, xt = t - shift_t;
      const acc_t et = ::exp(xt);
      sums[0] += ::exp(xs);
      sums[1] += et;
      sums[2] += et * (xt - xs);
      break;
    }
    default: {  // cosine, pearson
      const acc_t x = s - shift_s, y = t - shift_t;
      sums[0] += x * y;
      sums[1] += x * x;
      sums[2] += y * y;
      sums[3] += x;
      sums[4] += y;
    }
  }
}

// One row's distance and what its gradient needs.
template <typename acc_t>
struct PairRow {
  acc_t dist;
  acc_t shift_s, shift_t;  // kl: row maxima; pearson: row means; otherwise 0
  acc_t scale;             // l2: 1/|s - t| (0 at s == t); cosine/pearson: 1/(max(|x|, eps) max(|y|, eps))
  acc_t log_zs, log_zt;    // kl: log-partitions of the shifted rows
  acc_t k_s, k_t;          // cosine/pearson: cos/|x|^2 (0 where |x| < eps: the clamp has no gradient), same for y
  acc_t off_s, off_t;      // pearson: row mean of the gradient w.r.t. x (y), taken off by the centring
};

// The pre-pass results (kl: maxima; pearson: sums) and the row sums -> PairRow.
template <typename acc_t>
FASTNAS_HOST_DEVICE PairRow<acc_t> pair_finalize(PairMetric m, const acc_t* sums, acc_t pre_s, acc_t pre_t,
                                                 int64_t D) {
  PairRow<acc_t> r;
  r.dist = r.shift_s = r.shift_t = r.scale = r.log_zs = r.log_zt = r.k_s = r.k_t = r.off_s = r.off_t = acc_t(0);
  const acc_t inv_d = acc_t(1) / static_cast<acc_t>(D);
  switch (m) {
    case PairMetric::L1:
      r.dist = sums[0];
      break;
    case PairMetric::L2:
      r.dist = ::sqrt(sums[0]);
      // The gradient of |s - t| at s == t is defined as 0 (as torch's norm does).
      r.scale = r.dist > acc_t(0) ? acc_t(1) / r.dist : acc_t(0);
      break;
    case PairMetric::KL:
      r.shift_s = pre_s;
      r.shift_t = pre_t;
      r.log_zs = ::log(sums[0]);
      r.log_zt = ::log(sums[1]);
      // KL = sum p_t (log p_t - log p_s), log p = x - log Z on the shifted rows.
      r.dist = sums[2] / sums[1] + r.log_zs - r.log_zt;
      break;
    default: {  // cosine, pearson
      if (m == PairMetric::Pearson) {
        // the same division as the sums' pass: the backward centres on exactly that mean
        r.shift_s = pre_s / static_cast<acc_t>(D);
        r.shift_t = pre_t / static_cast<acc_t>(D);
      }
      const acc_t eps = static_cast<acc_t>(kPairCosineEps);
      const acc_t norm_s = ::sqrt(sums[1]), norm_t = ::sqrt(sums[2]);
      r.scale = acc_t(1) / ((norm_s > eps ? norm_s : eps) * (norm_t > eps ? norm_t : eps));
      const acc_t cos = sums[0] * r.scale;
      r.dist = acc_t(1) - cos;
      // torch's clamp_min passes the gradient where norm >= eps.
      r.k_s = norm_s >= eps ? cos / sums[1] : acc_t(0);
      r.k_t = norm_t >= eps ? cos / sums[2] : acc_t(0);
      if (m == PairMetric::Pearson) {
        // d cos/dx = y scale - k_s x; the centring projects it onto zero-mean vectors.
        // Exact arithmetic makes its mean 0 already; rounding does not, so take it off.
        r.off_s = (sums[4] * r.scale - r.k_s * sums[3]) * inv_d;
        r.off_t = (sums[3] * r.scale - r.k_t * sums[4]) * inv_d;
      }
    }
  }
  return r;
}

// Gradient of g * dist w.r.t. one element pair (s, t) of the row.
template <typename acc_t>
FASTNAS_HOST_DEVICE void pair_grad(PairMetric m, acc_t g, acc_t s, acc_t t, const PairRow<acc_t>& r, acc_t& ds,
                                   acc_t& dt) {
  switch (m) {
    case PairMetric::L1: {
      ds = g * (static_cast<acc_t>(s > t) - static_cast<acc_t>(s < t));  // sign(s - t), branch-free
      dt = -ds;
      break;
    }
    case PairMetric::L2:
      ds = g * (s - t) * r.scale;
      dt = -ds;
      break;
    case PairMetric::KL: {
      const acc_t log_ps = s - r.shift_s - r.log_zs, log_pt = t - r.shift_t - r.log_zt;
      const acc_t pt = ::exp(log_pt);
      ds = g * (::exp(log_ps) - pt);
      dt = g * pt * (log_pt - log_ps - r.dist);
      break;
    }
    default: {  // cosine, pearson: dist = 1 - cos
      const acc_t x = s - r.shift_s, y = t - r.shift_t;
      ds = -g * (y * r.scale - r.k_s * x - r.off_s);
      dt = -g * (x * r.scale - r.k_t * y - r.off_t);
    }
  }
}

// ---------------------------------------------------------------- gram_distance (device generic)

namespace gram_detail {

// Gram matrices in float32 when the features are half/bfloat16 (the GEMM then
// accumulates in float32 too), otherwise in the features' own dtype.
inline at::ScalarType compute_dtype(const at::Tensor& f) {
  const auto dtype = f.scalar_type();
  return dtype == at::kHalf || dtype == at::kBFloat16 ? at::kFloat : dtype;
}

struct NormalizedGram {
  at::Tensor gram;   // G = A / max(|A_i|, eps) row-wise, A = f f^T  [B, B]
  at::Tensor norm;   // |A_i|  [B, 1]
  at::Tensor denom;  // max(|A_i|, eps)  [B, 1]
};

inline NormalizedGram normalized_gram(const at::Tensor& f) {
  const auto a = at::mm(f, f.t());
  auto norm = at::linalg_vector_norm(a, 2, at::IntArrayRef{1}, /*keepdim=*/true);
  auto denom = norm.clamp_min(kGramNormalizeEps);
  return {a / denom, norm, denom};
}

// d loss / d f from d loss / d G. Through the row normalization:
//   dA_i = (dG_i - [|A_i| >= eps] (dG_i . G_i) G_i) / max(|A_i|, eps),
// then through A = f f^T: df = (dA + dA^T) f.
inline at::Tensor feature_grad(const at::Tensor& f, const NormalizedGram& g, const at::Tensor& d_gram) {
  const auto active = g.norm.ge(kGramNormalizeEps).to(g.gram.scalar_type());
  const auto radial = (d_gram * g.gram).sum(1, /*keepdim=*/true) * active;
  const auto d_a = (d_gram - radial * g.gram) / g.denom;
  return at::mm(d_a + d_a.t(), f);
}

}  // namespace gram_detail

// ||G_t - G_s||_F^2 / B^2 as a 0-d tensor of the features' dtype (NaN for B = 0).
inline at::Tensor gram_distance_impl(const at::Tensor& student, const at::Tensor& teacher, bool allow_half) {
  check_gram_distance_inputs(student, teacher, allow_half);
  const c10::OptionalDeviceGuard guard(student.device());
  const auto dtype = gram_detail::compute_dtype(student);
  const auto gram_s = gram_detail::normalized_gram(student.to(dtype));
  const auto gram_t = gram_detail::normalized_gram(teacher.to(dtype));
  const double batch = static_cast<double>(student.size(0));
  // An empty sum over B^2 = 0 entries: 0 / 0 = NaN, as in the reference.
  return ((gram_t.gram - gram_s.gram).square().sum() / (batch * batch)).to(student.scalar_type());
}

inline std::tuple<at::Tensor, at::Tensor> gram_distance_backward_impl(const at::Tensor& grad,
                                                                      const at::Tensor& student,
                                                                      const at::Tensor& teacher, bool allow_half) {
  check_gram_distance_inputs(student, teacher, allow_half);
  check_dim(grad, "grad", 0, "(a scalar)");
  check_same_dtype(grad, "grad", student, "student");
  check_same_device(grad, "grad", student, "student");
  const c10::OptionalDeviceGuard guard(student.device());
  const int64_t batch = student.size(0);
  if (batch == 0) return {at::zeros_like(student), at::zeros_like(teacher)};
  const auto dtype = gram_detail::compute_dtype(student);
  const auto s = student.to(dtype), t = teacher.to(dtype);
  const auto gram_s = gram_detail::normalized_gram(s);
  const auto gram_t = gram_detail::normalized_gram(t);
  // d loss / d G_t = 2 grad (G_t - G_s) / B^2 = -d loss / d G_s.
  const auto d_gram_t = (gram_t.gram - gram_s.gram) * (grad.to(dtype) * (2.0 / static_cast<double>(batch * batch)));
  auto grad_s = gram_detail::feature_grad(s, gram_s, -d_gram_t);
  auto grad_t = gram_detail::feature_grad(t, gram_t, d_gram_t);
  return {grad_s.to(student.scalar_type()), grad_t.to(teacher.scalar_type())};
}

}  // namespace fastnas

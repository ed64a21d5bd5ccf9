// at_loss on the CPU. Forward: one pass over each student/teacher tensor builds
// the attention maps v = mean_c |x|^p [B, HW] in double; the normalization and
// the squared difference then only touch those small maps. Nothing but the
// inputs is kept for backward, which rebuilds the maps, folds the normalize
// Jacobian into one coefficient per (b, hw) and writes grad_student in one pass.
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/at_loss.h"
#include "simd.h"

namespace fastnas {
namespace {

// Spatial positions per task of the map pass: the double accumulators of a
// block (8 KiB) stay in L1 while the block's channels stream past.
constexpr int64_t kBlock = 1024;

// Calls f with std::integral_constant<AtPower, power>, so the inner loops are
// compiled once per power kind without a branch per element. Always inlined, so
// that the loops inlined into the clones below are compiled for their ISA.
template <typename F>
FASTNAS_ALWAYS_INLINE void with_power(AtPower power, const F& f) {
  switch (power) {
    case AtPower::Two: f(std::integral_constant<AtPower, AtPower::Two>()); break;
    case AtPower::One: f(std::integral_constant<AtPower, AtPower::One>()); break;
    default: f(std::integral_constant<AtPower, AtPower::General>()); break;
  }
}

// T is the storage type, acc_t = at::opmath_type<T> the arithmetic type (float
// for float16/bfloat16, what autocast feeds a DNAD step).

// out[i] += sum_c |x[c * stride + i]|^p: the power in acc_t (as torch computes
// it: powf is 2-3x faster than pow), the sum in double. Four channels per pass
// over out, added in channel order as one at a time would.
template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE void add_abs_pow_impl(double* __restrict__ out, const T* __restrict__ x, int64_t channels,
                                            int64_t stride, int64_t n, AtPower kind, acc_t power) {
  with_power(kind, [&](auto k) __attribute__((always_inline)) {
    auto term = [&](const T* row, int64_t i) __attribute__((always_inline)) {
      return static_cast<double>(at_abs_pow<decltype(k)::value, acc_t>(static_cast<acc_t>(row[i]), power));
    };
    int64_t c = 0;
    for (; c + 4 <= channels; c += 4) {
      const T* row = x + c * stride;
      for (int64_t i = 0; i < n; ++i) {
        out[i] = out[i] + term(row, i) + term(row + stride, i) + term(row + 2 * stride, i) + term(row + 3 * stride, i);
      }
    }
    for (; c < channels; ++c) {
      for (int64_t i = 0; i < n; ++i) out[i] += term(x + c * stride, i);
    }
  });
}

// out[i] = coef[i] d|x[i]|^p/dx.
template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE void scale_abs_pow_grad_impl(T* __restrict__ out, const T* __restrict__ x,
                                                   const double* __restrict__ coef, int64_t n, AtPower kind,
                                                   acc_t power) {
  with_power(kind, [&](auto k) __attribute__((always_inline)) {
    constexpr AtPower kPower = decltype(k)::value;
    for (int64_t i = 0; i < n; ++i) {
      const auto grad = at_abs_pow_grad<kPower, acc_t>(static_cast<acc_t>(x[i]), power);
      out[i] = static_cast<T>(coef[i] * static_cast<double>(grad));
    }
  });
}

// The loops cloned per ISA (simd.h); the power switch runs once per call.
#define FASTNAS_AT_LOSS_LOOPS(T, A)                                                                        \
  FASTNAS_CPU_CLONES void add_abs_pow(double* __restrict__ out, const T* __restrict__ x, int64_t channels, \
                                      int64_t stride, int64_t n, AtPower kind, A power) {                  \
    add_abs_pow_impl(out, x, channels, stride, n, kind, power);                                            \
  }                                                                                                        \
  FASTNAS_CPU_CLONES void scale_abs_pow_grad(T* __restrict__ out, const T* __restrict__ x,                 \
                                             const double* __restrict__ coef, int64_t n, AtPower kind,     \
                                             A power) {                                                    \
    scale_abs_pow_grad_impl(out, x, coef, n, kind, power);                                                 \
  }
FASTNAS_AT_LOSS_LOOPS(float, float)
FASTNAS_AT_LOSS_LOOPS(double, double)
FASTNAS_AT_LOSS_LOOPS(at::Half, float)
FASTNAS_AT_LOSS_LOOPS(at::BFloat16, float)
#undef FASTNAS_AT_LOSS_LOOPS

// out[i] = mean_c |x[c * stride + i]|^p for i < n.
template <typename scalar_t>
void channel_mean(const scalar_t* x, int64_t channels, int64_t stride, int64_t n, AtPower kind, double p,
                  double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = 0;
  add_abs_pow(out, x, channels, stride, n, kind, static_cast<at::opmath_type<scalar_t>>(p));
  // A division, as torch's mean; with no channels 0 / 0 gives its NaN.
  const auto count = static_cast<double>(channels);
  for (int64_t i = 0; i < n; ++i) out[i] /= count;
}

// Attention maps (before normalization) of one pair, vs and vt [B, HW], in
// one parallel pass over (batch, spatial block) reading each tensor once.
template <typename scalar_t>
void attention_maps(const at::Tensor& s, const at::Tensor& t, const AtPairShape& shape, AtPower kind, double p,
                    double* vs, double* vt) {
  const int64_t hw = shape.spatial;
  if (shape.rows() == 0) return;
  const scalar_t* s_data = s.data_ptr<scalar_t>();
  const scalar_t* t_data = t.data_ptr<scalar_t>();
  const int64_t blocks_per_row = (hw + kBlock - 1) / kBlock;
  const int64_t work = std::max<int64_t>(1, (shape.student_channels + shape.teacher_channels) *
                                                std::min(hw, kBlock));
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / work);
  at::parallel_for(0, shape.batch * blocks_per_row, grain, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / blocks_per_row;
      const int64_t lo = (unit % blocks_per_row) * kBlock;
      const int64_t n = std::min(hw, lo + kBlock) - lo;
      channel_mean(s_data + b * shape.student_channels * hw + lo, shape.student_channels, hw, n, kind, p,
                   vs + b * hw + lo);
      channel_mean(t_data + b * shape.teacher_channels * hw + lo, shape.teacher_channels, hw, n, kind, p,
                   vt + b * hw + lo);
    }
  });
}

// Normalizes every row of v [B, HW] in place (v / max(||v||, eps)) and
// returns the row norms ||v||.
std::vector<double> normalize_rows(double* v, int64_t batch, int64_t hw) {
  std::vector<double> norms(batch);
  at::parallel_for(0, batch, std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, hw)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b) {
                       double* row = v + b * hw;
                       double squares = 0;
                       for (int64_t i = 0; i < hw; ++i) squares += row[i] * row[i];
                       norms[b] = std::sqrt(squares);
                       const double denominator = at_norm_floor(norms[b]);
                       for (int64_t i = 0; i < hw; ++i) row[i] /= denominator;
                     }
                   });
  return norms;
}

// Normalized maps a_s, a_t [B, HW] of one pair and the norms of the student rows.
struct PairMaps {
  std::vector<double> student, teacher, student_norms;
};

PairMaps pair_maps(const at::Tensor& s, const at::Tensor& t, const AtPairShape& shape, AtPower power, double p) {
  PairMaps maps;
  maps.student.resize(shape.rows());
  maps.teacher.resize(shape.rows());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "at_loss_maps_cpu", [&] {
    attention_maps<scalar_t>(s, t, shape, power, p, maps.student.data(), maps.teacher.data());
  });
  maps.student_norms = normalize_rows(maps.student.data(), shape.batch, shape.spatial);
  normalize_rows(maps.teacher.data(), shape.batch, shape.spatial);
  return maps;
}

at::Tensor at_loss_cpu(at::TensorList student, at::TensorList teacher, double p) {
  const auto plan = check_at_loss_inputs(student, teacher, p, /*allow_half=*/true);
  double total = 0;
  for (size_t i = 0; i < plan.pairs.size(); ++i) {
    const auto& shape = plan.pairs[i];
    const auto maps = pair_maps(student[i].contiguous(), teacher[i].contiguous(), shape, plan.power, p);
    double squares = 0;  // serial over the small map: deterministic
    for (int64_t r = 0; r < shape.rows(); ++r) {
      const double diff = maps.student[r] - maps.teacher[r];
      squares += diff * diff;
    }
    // mean over B * HW; an empty pair gives 0 / 0 = NaN, as torch's mean does.
    total += squares / static_cast<double>(shape.rows());
  }
  return at::scalar_tensor(total, student[0].options());
}

std::vector<at::Tensor> at_loss_backward_cpu(const at::Tensor& grad, at::TensorList student,
                                             at::TensorList teacher, double p) {
  const auto plan = check_at_loss_inputs(student, teacher, p, /*allow_half=*/true);
  check_at_loss_grad(grad, student);
  const double grad_value = grad.item<double>();
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < plan.pairs.size(); ++i) {
    const auto& shape = plan.pairs[i];
    const auto s = student[i].contiguous();
    auto grad_s = at::empty(s.sizes(), s.options());
    grads.push_back(grad_s);
    if (s.numel() == 0) continue;
    const auto maps = pair_maps(s, teacher[i].contiguous(), shape, plan.power, p);
    const int64_t hw = shape.spatial;

    // coef[b, hw] = dL/dv_s[b, hw] / C_s, with g = dL/da_s = 2 (a_s - a_t) grad / (B HW).
    std::vector<double> coef(shape.rows());
    const double scale = 2.0 * grad_value / static_cast<double>(shape.rows());
    const double inv_channels = 1.0 / static_cast<double>(shape.student_channels);
    for (int64_t b = 0; b < shape.batch; ++b) {
      const double* a_s = maps.student.data() + b * hw;
      const double* a_t = maps.teacher.data() + b * hw;
      double* k = coef.data() + b * hw;
      double n_dot_g = 0;
      for (int64_t j = 0; j < hw; ++j) {
        k[j] = scale * (a_s[j] - a_t[j]);
        n_dot_g += a_s[j] * k[j];
      }
      for (int64_t j = 0; j < hw; ++j) {
        k[j] = at_normalize_grad(k[j], a_s[j], n_dot_g, maps.student_norms[b]) * inv_channels;
      }
    }

    // One pass over the student: grad_s[b, c, hw] = coef[b, hw] d|s|^p/ds.
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "at_loss_backward_cpu", [&] {
      const scalar_t* x = s.data_ptr<scalar_t>();
      scalar_t* out = grad_s.data_ptr<scalar_t>();
      const int64_t channels = shape.student_channels;
      const auto power = static_cast<at::opmath_type<scalar_t>>(p);
      at::parallel_for(0, shape.batch * channels, std::max<int64_t>(1, at::internal::GRAIN_SIZE / hw),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t row = begin; row < end; ++row) {
                           scale_abs_pow_grad(out + row * hw, x + row * hw, coef.data() + (row / channels) * hw,
                                              hw, plan.power, power);
                         }
                       });
    });
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("at_loss", &at_loss_cpu);
  m.impl("at_loss_backward", &at_loss_backward_cpu);
}

}  // namespace fastnas

// pair_distance on the CPU: rows in parallel, each row summarized in double in
// one pass (two for kl and pearson: maxima/means first), forward and backward
// by the formulas of the common header. gram_distance is the device-generic
// ATen implementation of the header, registered for the CPU here.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/pair_distance.h"

namespace fastnas {
namespace {

// Rows per parallel task: enough elements that a task outweighs its scheduling.
int64_t rows_per_task(int64_t D) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(D, 1)); }

// Calls f with the metric as a compile-time constant, so that the switches of
// the inlined row math fold away and the element loops are branch-free.
template <typename F>
void dispatch_metric(PairMetric m, const F& f) {
  switch (m) {
    case PairMetric::L1: return f(std::integral_constant<PairMetric, PairMetric::L1>{});
    case PairMetric::L2: return f(std::integral_constant<PairMetric, PairMetric::L2>{});
    case PairMetric::KL: return f(std::integral_constant<PairMetric, PairMetric::KL>{});
    case PairMetric::Cosine: return f(std::integral_constant<PairMetric, PairMetric::Cosine>{});
    case PairMetric::Pearson: return f(std::integral_constant<PairMetric, PairMetric::Pearson>{});
  }
}

template <typename scalar_t>
inline PairRow<double> summarize_row(PairMetric m, const scalar_t* s, const scalar_t* t, int64_t D) {
  double pre_s = 0, pre_t = 0;
  if (pair_needs_pre_pass(m)) {
    if (pair_pre_pass_is_max(m)) {
      pre_s = static_cast<double>(s[0]);
      pre_t = static_cast<double>(t[0]);
      for (int64_t i = 1; i < D; ++i) {
        pre_s = std::max(pre_s, static_cast<double>(s[i]));
        pre_t = std::max(pre_t, static_cast<double>(t[i]));
      }
    } else {
      for (int64_t i = 0; i < D; ++i) {
        pre_s += static_cast<double>(s[i]);
        pre_t += static_cast<double>(t[i]);
      }
    }
  }
  // The shift of kl is the maximum itself; pearson's is the mean (pre / D).
  const double shift_s = m == PairMetric::Pearson ? pre_s / static_cast<double>(D) : pre_s;
  const double shift_t = m == PairMetric::Pearson ? pre_t / static_cast<double>(D) : pre_t;
  double sums[kPairSums] = {0, 0, 0, 0, 0};
  for (int64_t i = 0; i < D; ++i) {
    pair_accumulate<double>(m, static_cast<double>(s[i]), static_cast<double>(t[i]), shift_s, shift_t, sums);
  }
  return pair_finalize<double>(m, sums, pre_s, pre_t, D);
}

at::Tensor pair_distance_cpu(const at::Tensor& student, const at::Tensor& teacher, c10::string_view metric) {
  const auto m = check_pair_distance_inputs(student, teacher, metric, /*allow_half=*/false);
  const auto s = student.contiguous(), t = teacher.contiguous();
  const int64_t B = s.size(0), D = s.size(1);
  auto result = at::empty({B}, s.options());
  if (B == 0) return result;
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "pair_distance_cpu", [&] {
    const scalar_t* sp = s.data_ptr<scalar_t>();
    const scalar_t* tp = t.data_ptr<scalar_t>();
    scalar_t* out = result.data_ptr<scalar_t>();
    dispatch_metric(m, [&](auto metric) {
      at::parallel_for(0, B, rows_per_task(D), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          out[b] = static_cast<scalar_t>(summarize_row(metric(), sp + b * D, tp + b * D, D).dist);
        }
      });
    });
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> pair_distance_backward_cpu(const at::Tensor& grad, const at::Tensor& student,
                                                              const at::Tensor& teacher, c10::string_view metric) {
  const auto m = check_pair_distance_backward_inputs(grad, student, teacher, metric, /*allow_half=*/false);
  const auto s = student.contiguous(), t = teacher.contiguous(), g = grad.contiguous();
  const int64_t B = s.size(0), D = s.size(1);
  auto grad_s = at::empty({B, D}, s.options());
  auto grad_t = at::empty({B, D}, s.options());
  if (B == 0) return {grad_s, grad_t};
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "pair_distance_backward_cpu", [&] {
    const scalar_t* sp = s.data_ptr<scalar_t>();
    const scalar_t* tp = t.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* gs = grad_s.data_ptr<scalar_t>();
    scalar_t* gt = grad_t.data_ptr<scalar_t>();
    dispatch_metric(m, [&](auto metric) {
      at::parallel_for(0, B, rows_per_task(D), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const scalar_t* srow = sp + b * D;
          const scalar_t* trow = tp + b * D;
          const auto row = summarize_row(metric(), srow, trow, D);
          const double gb = static_cast<double>(gp[b]);
          for (int64_t i = 0; i < D; ++i) {
            double ds, dt;
            pair_grad<double>(metric(), gb, static_cast<double>(srow[i]), static_cast<double>(trow[i]), row, ds,
                              dt);
            gs[b * D + i] = static_cast<scalar_t>(ds);
            gt[b * D + i] = static_cast<scalar_t>(dt);
          }
        }
      });
    });
  });
  return {grad_s, grad_t};
}

at::Tensor gram_distance_cpu(const at::Tensor& student, const at::Tensor& teacher) {
  return gram_distance_impl(student, teacher, /*allow_half=*/false);
}

std::tuple<at::Tensor, at::Tensor> gram_distance_backward_cpu(const at::Tensor& grad, const at::Tensor& student,
                                                              const at::Tensor& teacher) {
  return gram_distance_backward_impl(grad, student, teacher, /*allow_half=*/false);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("pair_distance", &pair_distance_cpu);
  m.impl("pair_distance_backward", &pair_distance_backward_cpu);
  m.impl("gram_distance", &gram_distance_cpu);
  m.impl("gram_distance_backward", &gram_distance_backward_cpu);
}

}  // namespace fastnas

// foreach_reduce on the CPU: one call reduces every tensor of the list. The
// elements of all tensors are seen as one flat range cut into equal chunks;
// each chunk is a run of segments (a piece of one tensor), chunks run in
// parallel, and the per-segment partial sums are added per tensor in a fixed
// order afterwards. Chunk boundaries depend only on the tensor sizes, so the
// result is the same bit for bit whatever the number of threads, and many small
// tensors and a few big ones balance alike. Transforms are computed in the
// input precision (libm per element, or ATen's SIMD kernels on long segments),
// sums in double; the segment loops are cloned per ISA (simd.h).
#include <ATen/Parallel.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/foreach_reduce.h"
#include "simd.h"

namespace fastnas {
namespace {

// Elements per chunk: large enough that the per-chunk cost of the thread pool
// is small, small enough that a few layer-sized tensors still split across threads.
constexpr int64_t kChunk = 32768;
// Independent partial sums per segment: breaks the dependency chain of the
// additions (and lets the compiler vectorize them) in a fixed summation order.
constexpr int kLanes = 8;

struct Segment {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

struct Partition {
  std::vector<Segment> segments;      // in tensor order, then element order
  std::vector<int64_t> chunk_begin;   // chunk k holds segments [chunk_begin[k], chunk_begin[k + 1])
  int64_t num_chunks() const { return static_cast<int64_t>(chunk_begin.size()) - 1; }
};

Partition partition(const std::vector<at::Tensor>& tensors) {
  Partition part;
  int64_t offset = 0;  // position of the tensor's first element in the flat range
  for (size_t t = 0; t < tensors.size(); ++t) {
    const int64_t numel = tensors[t].numel();
    for (int64_t pos = offset; pos < offset + numel;) {
      if (pos % kChunk == 0) part.chunk_begin.push_back(static_cast<int64_t>(part.segments.size()));
      const int64_t stop = std::min(offset + numel, (pos / kChunk + 1) * kChunk);
      part.segments.push_back({static_cast<int64_t>(t), pos - offset, stop - offset});
      pos = stop;
    }
    offset += numel;
  }
  part.chunk_begin.push_back(static_cast<int64_t>(part.segments.size()));
  return part;
}

// Runs body(segment index) for every segment, chunks in parallel.
template <typename Body>
void for_each_segment(const Partition& part, const Body& body) {
  at::parallel_for(0, part.num_chunks(), 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      for (int64_t s = part.chunk_begin[k]; s < part.chunk_begin[k + 1]; ++s) body(s);
    }
  });
}

// Calls f with the transform and the reduction as compile-time constants, so
// that the inner loops hold no switch. Always inlined, so that the loops
// inlined into a clone of segment_value are compiled for its ISA.
template <typename F>
FASTNAS_ALWAYS_INLINE void with_options(const ForeachReducePlan& plan, const F& f) {
  auto with_reduction = [&](auto transform) __attribute__((always_inline)) {
    using R = ForeachReduction;
    switch (plan.reduction) {
      case R::Sum: return f(transform, std::integral_constant<R, R::Sum>{});
      case R::Mean: return f(transform, std::integral_constant<R, R::Mean>{});
      case R::L1: return f(transform, std::integral_constant<R, R::L1>{});
      case R::L2: return f(transform, std::integral_constant<R, R::L2>{});
    }
  };
  using T = ForeachTransform;
  switch (plan.transform) {
    case T::Identity: return with_reduction(std::integral_constant<T, T::Identity>{});
    case T::Abs: return with_reduction(std::integral_constant<T, T::Abs>{});
    case T::Square: return with_reduction(std::integral_constant<T, T::Square>{});
    case T::Pow4: return with_reduction(std::integral_constant<T, T::Pow4>{});
    case T::Exp: return with_reduction(std::integral_constant<T, T::Exp>{});
    case T::LogAbs: return with_reduction(std::integral_constant<T, T::LogAbs>{});
    case T::SqrtAbs: return with_reduction(std::integral_constant<T, T::SqrtAbs>{});
    case T::Sigmoid: return with_reduction(std::integral_constant<T, T::Sigmoid>{});
    case T::Tanh: return with_reduction(std::integral_constant<T, T::Tanh>{});
    case T::Relu: return with_reduction(std::integral_constant<T, T::Relu>{});
  }
}

// log(x) of a float x >= FLT_MIN (or inf, NaN) without calls or branches, so
// that the compiler vectorizes it where libm's logf is one call per element.
// Cephes' logf: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log(m) from a
// polynomial in m - 1, e log(2) added in two parts; within 1 ulp of log(x).
// c10::bit_cast, not std::bit_cast: the sources must compile at C++17 (torch <= 2.13's builds).
FASTNAS_ALWAYS_INLINE float log_vectorizable(float x) {
  const uint32_t bits = c10::bit_cast<uint32_t>(x);
  // Exponent and mantissa m in [1/2, 1), then moved into [sqrt(1/2), sqrt(2)).
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  float m = c10::bit_cast<float>((bits & 0x007fffffu) | 0x3f000000u);
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  const float r = (low ? m + m : m) - 1.0f;
  const float r2 = r * r;
  const float p = ((((((((7.0376836292e-2f * r - 1.1514610310e-1f) * r + 1.1676998740e-1f) * r - 1.2420140846e-1f) *
                            r + 1.4249322787e-1f) * r - 1.6668057665e-1f) * r + 2.0000714765e-1f) * r -
                      2.4999993993e-1f) * r + 3.3333331174e-1f);
  const float log_m = r + (p * r * r2 - 0.5f * r2 + e * -2.12194440e-4f);
  const float result = log_m + e * 0.693359375f;
  return x < std::numeric_limits<float>::infinity() ? result : x;  // log(inf) = inf, NaN stays NaN
}

// y = transform(x) as foreach_transform_value, with log_abs of a float computed
// by log_vectorizable (its argument |x| + 1e-6 is >= FLT_MIN).
template <ForeachTransform transform, typename scalar_t>
FASTNAS_ALWAYS_INLINE scalar_t transform_value(scalar_t x) {
  if constexpr (transform == ForeachTransform::LogAbs && std::is_same_v<scalar_t, float>) {
    return log_vectorizable(std::fabs(x) + static_cast<float>(kForeachLogAbsEps));
  }
  return foreach_transform_value(x, transform);
}

// Sum over the segment of reduction_term(transform(x)): the transform in the
// input precision (as torch computes it), the sum in double. The transform
// fills a block buffer in a plain elementwise loop, which the compiler
// vectorizes (it does not when the same math sits inside the summation loop).
template <ForeachTransform transform, ForeachReduction reduction, typename scalar_t>
FASTNAS_ALWAYS_INLINE double segment_total(const scalar_t* __restrict__ x, int64_t n) {
  constexpr int64_t kBlock = 32 * kLanes;
  scalar_t y[kBlock];
  double lanes[kLanes] = {};
  double tail = 0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    for (int64_t i = 0; i < len; ++i) y[i] = transform_value<transform>(x[start + i]);
    int64_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] += foreach_reduction_term(static_cast<double>(y[i + l]), reduction);
    }
    for (; i < len; ++i) tail += foreach_reduction_term(static_cast<double>(y[i]), reduction);  // last block only
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

// Transforms that call libm per element (or branch on the sign: relu, which the
// compiler does not if-convert here) are several times slower than ATen's SIMD
// kernels; on a long enough segment (where the dispatch of an ATen op costs
// little) ATen computes the transform into a buffer that the reduction then reads.
constexpr int64_t kAtenMinSegment = 1024;

template <typename scalar_t>
constexpr bool slow_per_element(ForeachTransform transform) {
  if (transform == ForeachTransform::LogAbs) return !std::is_same_v<scalar_t, float>;  // see transform_value
  return transform == ForeachTransform::Relu || transform == ForeachTransform::Exp ||
         transform == ForeachTransform::SqrtAbs || transform == ForeachTransform::Sigmoid ||
         transform == ForeachTransform::Tanh;
}

at::Tensor aten_transform(const at::Tensor& x, ForeachTransform transform) {
  switch (transform) {
    case ForeachTransform::Exp: return at::exp(x);
    case ForeachTransform::LogAbs: return at::abs(x).add_(kForeachLogAbsEps).log_();
    case ForeachTransform::SqrtAbs: return at::abs(x).sqrt_();
    case ForeachTransform::Sigmoid: return at::sigmoid(x);
    case ForeachTransform::Tanh: return at::tanh(x);
    case ForeachTransform::Relu: return at::relu(x);
    default: return x;
  }
}

template <ForeachTransform transform, ForeachReduction reduction, typename scalar_t>
FASTNAS_ALWAYS_INLINE double segment_value_impl(const scalar_t* __restrict__ x, int64_t n) {
  if constexpr (slow_per_element<scalar_t>(transform)) {
    if (n >= kAtenMinSegment) {
      const auto view = at::from_blob(const_cast<scalar_t*>(x), {n}, c10::CppTypeToScalarType<scalar_t>::value);
      const auto y = aten_transform(view, transform);
      return segment_total<ForeachTransform::Identity, reduction>(y.template data_ptr<scalar_t>(), n);
    }
  }
  return segment_total<transform, reduction>(x, n);
}

// The total of one segment; the switch over the options runs once per segment.
#define FASTNAS_SEGMENT_VALUE(T)                                                                             \
  FASTNAS_CPU_CLONES double segment_value(const T* __restrict__ x, int64_t n, ForeachReducePlan plan) {     \
    double total = 0;                                                                                        \
    with_options(plan, [&](auto transform, auto reduction) __attribute__((always_inline)) {                  \
      total = segment_value_impl<decltype(transform)::value, decltype(reduction)::value>(x, n);              \
    });                                                                                                      \
    return total;                                                                                            \
  }
FASTNAS_SEGMENT_VALUE(float)
FASTNAS_SEGMENT_VALUE(double)
#undef FASTNAS_SEGMENT_VALUE

// reduction(transform(x)) of every tensor, in double.
std::vector<double> reduce_all(const std::vector<at::Tensor>& inputs, const Partition& part,
                               const ForeachReducePlan& plan) {
  std::vector<double> partial(part.segments.size());
  AT_DISPATCH_FLOATING_TYPES(inputs[0].scalar_type(), "foreach_reduce_cpu", [&] {
    std::vector<const scalar_t*> data;
    for (const auto& t : inputs) data.push_back(t.data_ptr<scalar_t>());
    for_each_segment(part, [&](int64_t s) {
      const Segment& seg = part.segments[s];
      partial[s] = segment_value(data[seg.tensor] + seg.begin, seg.end - seg.begin, plan);
    });
  });
  std::vector<double> values(inputs.size(), 0.0);
  for (size_t s = 0; s < part.segments.size(); ++s) values[part.segments[s].tensor] += partial[s];
  for (size_t t = 0; t < inputs.size(); ++t) {
    values[t] = foreach_reduction_finish(values[t], inputs[t].numel(), plan.reduction);
  }
  return values;
}

at::Tensor foreach_reduce_cpu(at::TensorList tensors, c10::string_view transform, c10::string_view reduction) {
  const auto plan = check_foreach_reduce_inputs(tensors, transform, reduction, /*allow_half=*/false);
  const auto inputs = contiguous_all(tensors);
  const auto values = reduce_all(inputs, partition(inputs), plan);
  auto result = at::empty({static_cast<int64_t>(values.size())}, inputs[0].options());
  AT_DISPATCH_FLOATING_TYPES(result.scalar_type(), "foreach_reduce_result", [&] {
    std::copy(values.begin(), values.end(), result.data_ptr<scalar_t>());  // rounds to the input dtype
  });
  return result;
}

std::vector<at::Tensor> foreach_reduce_backward_cpu(const at::Tensor& grad, at::TensorList tensors,
                                                    c10::string_view transform, c10::string_view reduction) {
  const auto plan = check_foreach_reduce_backward_inputs(grad, tensors, transform, reduction, /*allow_half=*/false);
  const auto inputs = contiguous_all(tensors);
  const auto part = partition(inputs);
  // l2 needs each tensor's norm: recompute it (the schema does not pass the output).
  const auto values = plan.reduction == ForeachReduction::L2 ? reduce_all(inputs, part, plan)
                                                             : std::vector<double>(inputs.size(), 0.0);
  const auto grad_d = grad.to(at::kDouble).contiguous();
  const double* g = grad_d.data_ptr<double>();

  std::vector<at::Tensor> grads;
  grads.reserve(inputs.size());
  for (const auto& t : inputs) grads.push_back(at::empty_like(t));
  AT_DISPATCH_FLOATING_TYPES(inputs[0].scalar_type(), "foreach_reduce_backward_cpu", [&] {
    std::vector<const scalar_t*> src;
    std::vector<scalar_t*> dst;
    for (size_t t = 0; t < inputs.size(); ++t) {
      src.push_back(inputs[t].data_ptr<scalar_t>());
      dst.push_back(grads[t].data_ptr<scalar_t>());
    }
    with_options(plan, [&](auto transform_c, auto reduction_c) {
      constexpr ForeachTransform kTransform = decltype(transform_c)::value;
      constexpr ForeachReduction kReduction = decltype(reduction_c)::value;
      for_each_segment(part, [&](int64_t s) {
        const Segment& seg = part.segments[s];
        const scalar_t* x = src[seg.tensor];
        scalar_t* out = dst[seg.tensor];
        const double gt = g[seg.tensor], value = values[seg.tensor];
        const int64_t numel = inputs[seg.tensor].numel();
        for (int64_t i = seg.begin; i < seg.end; ++i) {
          const scalar_t xi = x[i];
          double dr;
          if constexpr (kReduction == ForeachReduction::L1 || kReduction == ForeachReduction::L2) {
            dr = foreach_reduction_grad(static_cast<double>(foreach_transform_value(xi, kTransform)), value, numel,
                                        kReduction);
          } else {
            dr = foreach_reduction_grad(0.0, value, numel, kReduction);  // does not depend on y
          }
          out[i] = static_cast<scalar_t>(gt * dr * static_cast<double>(foreach_transform_grad(xi, kTransform)));
        }
      });
    });
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("foreach_reduce", &foreach_reduce_cpu);
  m.impl("foreach_reduce_backward", &foreach_reduce_backward_cpu);
}

}  // namespace fastnas

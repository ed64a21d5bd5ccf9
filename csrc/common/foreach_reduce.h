// foreach_reduce: argument checks and the elementwise math shared by the CPU
// and CUDA kernels. For every tensor x of a list the op computes
// reduction(transform(x)), one value per tensor, as in
// fastnas/ops/_reference.py::foreach_reduce.
#pragma once

#include <cmath>
#include <cstdint>

#include "checks.h"

namespace fastnas {

enum class ForeachTransform {
  Identity = 0, Abs = 1, Square = 2, Pow4 = 3, Exp = 4, LogAbs = 5, SqrtAbs = 6, Sigmoid = 7, Tanh = 8,
  Relu = 9
};
constexpr std::array<const char*, 10> kForeachTransforms = {
    "identity", "abs", "square", "pow4", "exp", "log_abs", "sqrt_abs", "sigmoid", "tanh", "relu"};

enum class ForeachReduction { Sum = 0, Mean = 1, L1 = 2, L2 = 3 };
constexpr std::array<const char*, 4> kForeachReductions = {"sum", "mean", "l1", "l2"};

// log(|x| + eps) keeps log_abs finite at x = 0; the same value as
// fastnas/ops/_reference.py::LOG_ABS_EPS.
constexpr double kForeachLogAbsEps = 1e-6;

struct ForeachReducePlan {
  ForeachTransform transform;
  ForeachReduction reduction;
};

// Validates the arguments of foreach_reduce: a non-empty list of floating
// tensors (any shapes, empty ones allowed) of one dtype on one device.
inline ForeachReducePlan check_foreach_reduce_inputs(at::TensorList tensors, c10::string_view transform,
                                                     c10::string_view reduction, bool allow_half) {
  ForeachReducePlan plan;
  plan.transform = parse_option<ForeachTransform>(transform, "transform", kForeachTransforms);
  plan.reduction = parse_option<ForeachReduction>(reduction, "reduction", kForeachReductions);
  TORCH_CHECK(!tensors.empty(), "tensors: expected a non-empty list of tensors, got an empty list");
  for (size_t i = 0; i < tensors.size(); ++i) {
    // A tensor of the first one's dtype and device passes the checks below: skip
    // building their argument names, which costs about as much as reducing a small tensor.
    if (i > 0 && tensors[i].scalar_type() == tensors[0].scalar_type() && tensors[i].device() == tensors[0].device()) {
      continue;
    }
    check_floating(tensors[i], indexed("tensors", i), allow_half);
    check_same_device(tensors[i], indexed("tensors", i), tensors[0], "tensors[0]");
    check_same_dtype(tensors[i], indexed("tensors", i), tensors[0], "tensors[0]");
  }
  return plan;
}

// The backward op also takes `grad`, the gradient of the [len(tensors)] output.
inline ForeachReducePlan check_foreach_reduce_backward_inputs(const at::Tensor& grad, at::TensorList tensors,
                                                              c10::string_view transform,
                                                              c10::string_view reduction, bool allow_half) {
  const auto plan = check_foreach_reduce_inputs(tensors, transform, reduction, allow_half);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == static_cast<int64_t>(tensors.size()),
              "grad: expected shape [", tensors.size(), "] (one value per tensor), got ", grad.sizes());
  check_same_dtype(grad, "grad", tensors[0], "tensors[0]");
  check_same_device(grad, "grad", tensors[0], "tensors[0]");
  return plan;
}

// Math of T = float or double in the precision of T: the CUDA overloads in
// device code, the std:: overloads on the host (::exp(float) may be the double one).
#if defined(__CUDA_ARCH__)
#define FASTNAS_FOREACH_MATH(fn) \
  template <typename T>          \
  FASTNAS_HOST_DEVICE T foreach_##fn(T x) { return ::fn(x); }
#else
#define FASTNAS_FOREACH_MATH(fn) \
  template <typename T>          \
  FASTNAS_HOST_DEVICE T foreach_##fn(T x) { return std::fn(x); }
#endif
FASTNAS_FOREACH_MATH(fabs)
FASTNAS_FOREACH_MATH(exp)
FASTNAS_FOREACH_MATH(log)
FASTNAS_FOREACH_MATH(sqrt)
FASTNAS_FOREACH_MATH(tanh)
#undef FASTNAS_FOREACH_MATH

template <typename T>
FASTNAS_HOST_DEVICE T foreach_sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

// y = transform(x).
template <typename T>
FASTNAS_HOST_DEVICE T foreach_transform_value(T x, ForeachTransform transform) {
  switch (transform) {
    case ForeachTransform::Abs: return foreach_fabs(x);
    case ForeachTransform::Square: return x * x;
    case ForeachTransform::Pow4: return (x * x) * (x * x);
    case ForeachTransform::Exp: return foreach_exp(x);
    case ForeachTransform::LogAbs: return foreach_log(foreach_fabs(x) + T(kForeachLogAbsEps));
    case ForeachTransform::SqrtAbs: return foreach_sqrt(foreach_fabs(x));
    case ForeachTransform::Sigmoid: return T(1) / (T(1) + foreach_exp(-x));
    case ForeachTransform::Tanh: return foreach_tanh(x);
    // x < 0 ? 0 : x keeps NaN like torch.relu and compiles to one branch-free max.
    case ForeachTransform::Relu: return x < T(0) ? T(0) : x;
    default: return x;  // Identity
  }
}

// dy/dx of the transform. abs and sqrt_abs are not differentiable at x = 0:
// there we define the derivative as 0 (torch gives 0 for abs and NaN for
// sqrt_abs); relu has derivative 0 at 0 as in torch.
template <typename T>
FASTNAS_HOST_DEVICE T foreach_transform_grad(T x, ForeachTransform transform) {
  switch (transform) {
    case ForeachTransform::Abs: return foreach_sign(x);
    case ForeachTransform::Square: return T(2) * x;
    case ForeachTransform::Pow4: return T(4) * x * x * x;
    case ForeachTransform::Exp: return foreach_exp(x);
    case ForeachTransform::LogAbs: return foreach_sign(x) / (foreach_fabs(x) + T(kForeachLogAbsEps));
    case ForeachTransform::SqrtAbs: return x == T(0) ? T(0) : foreach_sign(x) * T(0.5) / foreach_sqrt(foreach_fabs(x));
    case ForeachTransform::Sigmoid: {
      const T s = T(1) / (T(1) + foreach_exp(-x));
      return s * (T(1) - s);
    }
    case ForeachTransform::Tanh: {
      const T t = foreach_tanh(x);
      return T(1) - t * t;
    }
    case ForeachTransform::Relu: return x > T(0) ? T(1) : T(0);
    default: return T(1);  // Identity
  }
}

// What one element y adds to the running total of the reduction.
template <typename T>
FASTNAS_HOST_DEVICE T foreach_reduction_term(T y, ForeachReduction reduction) {
  switch (reduction) {
    case ForeachReduction::L1: return foreach_fabs(y);
    case ForeachReduction::L2: return y * y;
    default: return y;  // Sum, Mean
  }
}

// The reduction value of a tensor of `numel` elements from its total; the
// mean of an empty tensor is 0 / 0 = NaN as in torch.mean.
template <typename T>
FASTNAS_HOST_DEVICE T foreach_reduction_finish(T total, int64_t numel, ForeachReduction reduction) {
  switch (reduction) {
    case ForeachReduction::Mean: return total / static_cast<T>(numel);
    case ForeachReduction::L2: return foreach_sqrt(total);
    default: return total;  // Sum, L1
  }
}

// d reduction / d y for one element y, given the reduction's `value`
// (needed by l2 only). l1 uses sign(y) (0 at y = 0, as torch.abs); l2 uses
// y / ||y|| and 0 when the norm is 0 (as torch.linalg.vector_norm).
template <typename T>
FASTNAS_HOST_DEVICE T foreach_reduction_grad(T y, T value, int64_t numel, ForeachReduction reduction) {
  switch (reduction) {
    case ForeachReduction::Mean: return T(1) / static_cast<T>(numel);
    case ForeachReduction::L1: return foreach_sign(y);
    case ForeachReduction::L2: return value > T(0) ? y / value : T(0);
    default: return T(1);  // Sum
  }
}

}  // namespace fastnas

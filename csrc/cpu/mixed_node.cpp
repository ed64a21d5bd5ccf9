// mixed_node on the CPU: one pass over the live operator outputs forward, one
// pass backward that writes every operator's gradient and accumulates the
// dot products that the alpha gradient needs.
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/mixed_node.h"
#include "simd.h"

namespace fastnas {
namespace {

// Elements handled per inner block: the block of the result (or of the incoming
// gradient) stays in L2 while the operators stream past.
constexpr int64_t kBlock = 32768;
// Independent partial sums per dot product (a multiple of any SIMD width).
constexpr int kLanes = 16;

// ---- The loops (restrict parameters: no aliasing checks; cloned per ISA, see simd.h).
// T is the storage type, acc_t = at::opmath_type<T> the arithmetic type: float for
// float16/bfloat16 (what autocast feeds a search step), the type itself otherwise.

// out = w * a (out in acc_t: for half types a float block, see mixed_node_cpu).
template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE void scale_impl(acc_t* __restrict__ out, const T* __restrict__ a, acc_t w, int64_t n) {
  for (int64_t x = 0; x < n; ++x) out[x] = w * static_cast<acc_t>(a[x]);
}

// Four operators per pass over the result: one pass per operator re-reads the
// result L times, and L streams at the same page offset thrash the L1 sets.
template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE void add_scaled4_impl(acc_t* __restrict__ out, const T* __restrict__ a,
                                            const T* __restrict__ b, const T* __restrict__ c,
                                            const T* __restrict__ d, const acc_t* w, int64_t n) {
  const acc_t wa = w[0], wb = w[1], wc = w[2], wd = w[3];
  for (int64_t x = 0; x < n; ++x) {
    out[x] += wa * static_cast<acc_t>(a[x]) + wb * static_cast<acc_t>(b[x]) + wc * static_cast<acc_t>(c[x]) +
              wd * static_cast<acc_t>(d[x]);
  }
}

template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE void add_scaled_impl(acc_t* __restrict__ out, const T* __restrict__ a, acc_t w, int64_t n) {
  for (int64_t x = 0; x < n; ++x) out[x] += w * static_cast<acc_t>(a[x]);
}

// grad_out = w * grad; returns sum(grad * out) (kLanes partial sums the compiler vectorizes).
template <typename T, typename acc_t = at::opmath_type<T>>
FASTNAS_ALWAYS_INLINE double scale_and_dot_impl(T* __restrict__ grad_out, const T* __restrict__ grad,
                                                const T* __restrict__ out, acc_t w, int64_t n) {
  acc_t lanes[kLanes] = {};
  int64_t x = 0;
  for (; x + kLanes <= n; x += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const auto g = static_cast<acc_t>(grad[x + k]);
      grad_out[x + k] = static_cast<T>(w * g);
      lanes[k] += g * static_cast<acc_t>(out[x + k]);
    }
  }
  double dot = 0;
  for (int k = 0; k < kLanes; ++k) dot += lanes[k];
  for (; x < n; ++x) {
    const auto g = static_cast<acc_t>(grad[x]);
    grad_out[x] = static_cast<T>(w * g);
    dot += g * static_cast<acc_t>(out[x]);
  }
  return dot;
}

#define FASTNAS_MIXED_NODE_LOOPS(T, A)                                                                      \
  FASTNAS_CPU_CLONES void scale(A* __restrict__ out, const T* __restrict__ a, A w, int64_t n) {           \
    scale_impl(out, a, w, n);                                                                             \
  }                                                                                                       \
  FASTNAS_CPU_CLONES void add_scaled4(A* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, \
                                      const T* __restrict__ c, const T* __restrict__ d, const A* w,          \
                                      int64_t n) {                                                        \
    add_scaled4_impl(out, a, b, c, d, w, n);                                                              \
  }                                                                                                       \
  FASTNAS_CPU_CLONES void add_scaled(A* __restrict__ out, const T* __restrict__ a, A w, int64_t n) {      \
    add_scaled_impl(out, a, w, n);                                                                        \
  }                                                                                                       \
  FASTNAS_CPU_CLONES double scale_and_dot(T* __restrict__ grad_out, const T* __restrict__ grad,           \
                                          const T* __restrict__ out, A w, int64_t n) {                    \
    return scale_and_dot_impl(grad_out, grad, out, w, n);                                                 \
  }
FASTNAS_MIXED_NODE_LOOPS(float, float)
FASTNAS_MIXED_NODE_LOOPS(double, double)
FASTNAS_MIXED_NODE_LOOPS(at::Half, float)
FASTNAS_MIXED_NODE_LOOPS(at::BFloat16, float)
#undef FASTNAS_MIXED_NODE_LOOPS

std::vector<double> live_alpha_values(const at::Tensor& alpha, const MixedNodePlan& plan) {
  const auto flat = alpha.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* data = flat.data_ptr<double>();
  std::vector<double> values;
  for (int32_t index : plan.live_index) values.push_back(data[index]);
  return values;
}

std::vector<double> weights_of(const std::vector<double>& alpha_live, const MixedNodePlan& plan) {
  std::vector<double> w(alpha_live.size());
  live_weights<double>(alpha_live.data(), plan.live_edge.data(), static_cast<int>(w.size()), plan.mode,
                       plan.inv_temperature, w.data());
  return w;
}

at::Tensor mixed_node_cpu(at::TensorList outs, const at::Tensor& alpha, const at::Tensor& mask,
                          c10::string_view mode, double temperature) {
  const auto plan = check_mixed_node_inputs(outs, alpha, mask, mode, temperature, /*allow_half=*/true);
  const auto w = weights_of(live_alpha_values(alpha, plan), plan);
  const auto inputs = contiguous_all(outs);
  auto result = at::empty(outs[0].sizes(), outs[0].options());
  const int64_t numel = result.numel();
  const int L = static_cast<int>(plan.num_live());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, result.scalar_type(), "mixed_node_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr bool kSameType = std::is_same<acc_t, scalar_t>::value;
    std::vector<const scalar_t*> src;
    std::vector<acc_t> weight;
    for (int i = 0; i < L; ++i) {
      src.push_back(inputs[i].data_ptr<scalar_t>());
      weight.push_back(static_cast<acc_t>(w[i]));
    }
    scalar_t* dst = result.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      // Half types sum all operators of a block in float and round once at the end.
      std::vector<acc_t> block(kSameType ? 0 : std::min(end - begin, kBlock));
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t n = std::min(end, lo + kBlock) - lo;
        acc_t* sum = kSameType ? reinterpret_cast<acc_t*>(dst + lo) : block.data();
        scale(sum, src[0] + lo, weight[0], n);
        int i = 1;
        for (; i + 4 <= L; i += 4) {
          add_scaled4(sum, src[i] + lo, src[i + 1] + lo, src[i + 2] + lo, src[i + 3] + lo, &weight[i], n);
        }
        for (; i < L; ++i) add_scaled(sum, src[i] + lo, weight[i], n);
        if (!kSameType) std::copy(sum, sum + n, dst + lo);  // rounds to the storage type
      }
    });
  });
  return result;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_node_backward_cpu(
    const at::Tensor& grad, at::TensorList outs, const at::Tensor& alpha, const at::Tensor& mask,
    c10::string_view mode, double temperature) {
  const auto plan =
      check_mixed_node_backward_inputs(grad, outs, alpha, mask, mode, temperature, /*allow_half=*/true);
  const auto alpha_live = live_alpha_values(alpha, plan);
  const auto w = weights_of(alpha_live, plan);
  const auto inputs = contiguous_all(outs);
  const auto grad_c = grad.contiguous();
  const int64_t numel = grad_c.numel();
  const int L = static_cast<int>(plan.num_live());

  std::vector<at::Tensor> grad_outs;
  for (int i = 0; i < L; ++i) grad_outs.push_back(at::empty(outs[0].sizes(), outs[0].options()));
  // One row of partial dot products per worker thread, summed afterwards.
  std::vector<std::vector<double>> partial_dots(at::get_num_threads(), std::vector<double>(L, 0.0));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_c.scalar_type(), "mixed_node_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_c.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      auto& dots = partial_dots[at::get_thread_num()];
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t n = std::min(end, lo + kBlock) - lo;
        for (int i = 0; i < L; ++i) {
          dots[i] += scale_and_dot(grad_outs[i].data_ptr<scalar_t>() + lo, g + lo,
                                   inputs[i].data_ptr<scalar_t>() + lo, static_cast<acc_t>(w[i]), n);
        }
      }
    });
  });

  std::vector<double> dot(L, 0.0), grad_live(L);
  for (const auto& dots : partial_dots) {
    for (int i = 0; i < L; ++i) dot[i] += dots[i];
  }
  live_alpha_grad<double>(alpha_live.data(), w.data(), dot.data(), plan.live_edge.data(), L, plan.mode,
                          plan.inv_temperature, grad_live.data());
  auto grad_alpha = at::zeros({alpha.numel()}, alpha.options().dtype(at::kDouble).device(at::kCPU));
  double* ga = grad_alpha.data_ptr<double>();
  for (int i = 0; i < L; ++i) ga[plan.live_index[i]] = grad_live[i];
  return {grad_outs, grad_alpha.view(alpha.sizes()).to(alpha.options())};
}

// ---- chunk_sum: the same loops over runs of one batch row, each slot read at its offset in its tensor.

// Calls body(b, r, n) for the runs [lo, hi) of flat result indices split at batch-row ends:
// result[b * D + r .. + n) reads slot s at b * batch_stride[s] + offset[s] + r.
template <typename Body>
void for_each_row_run(int64_t lo, int64_t hi, int64_t row, const Body& body) {
  while (lo < hi) {
    const int64_t b = lo / row, r = lo - b * row;
    const int64_t n = std::min(hi - lo, row - r);
    body(b, r, n);
    lo += n;
  }
}

std::vector<double> host_weights(const at::Tensor& weights) {
  const auto flat = weights.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
}

at::Tensor chunk_sum_cpu(at::TensorList outs, const at::Tensor& weights, at::IntArrayRef chunks) {
  const auto plan = check_chunk_sum_inputs(outs, weights, chunks, /*allow_half=*/true);
  const auto w = host_weights(weights);
  const auto inputs = contiguous_all(outs);
  auto result = at::empty(plan.result_sizes, outs[0].options());
  const int64_t numel = result.numel();
  const int L = static_cast<int>(plan.num_slots());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, result.scalar_type(), "chunk_sum_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr bool kSameType = std::is_same<acc_t, scalar_t>::value;
    std::vector<const scalar_t*> base;
    std::vector<acc_t> weight;
    for (int s = 0; s < L; ++s) {
      base.push_back(inputs[plan.term[s]].data_ptr<scalar_t>() + plan.offset[s]);
      weight.push_back(static_cast<acc_t>(w[s]));
    }
    scalar_t* dst = result.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> block(kSameType ? 0 : std::min(end - begin, kBlock));
      std::vector<const scalar_t*> src(L);
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t hi = std::min(end, lo + kBlock);
        acc_t* sum_block = kSameType ? reinterpret_cast<acc_t*>(dst + lo) : block.data();
        for_each_row_run(lo, hi, plan.row, [&](int64_t b, int64_t r, int64_t n) {
          acc_t* sum = sum_block + (b * plan.row + r - lo);
          for (int s = 0; s < L; ++s) src[s] = base[s] + b * plan.batch_stride[s] + r;
          scale(sum, src[0], weight[0], n);
          int s = 1;
          for (; s + 4 <= L; s += 4) add_scaled4(sum, src[s], src[s + 1], src[s + 2], src[s + 3], &weight[s], n);
          for (; s < L; ++s) add_scaled(sum, src[s], weight[s], n);
        });
        if (!kSameType) std::copy(sum_block, sum_block + (hi - lo), dst + lo);  // rounds to the storage type
      }
    });
  });
  return result;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> chunk_sum_backward_cpu(const at::Tensor& grad, at::TensorList outs,
                                                                       const at::Tensor& weights,
                                                                       at::IntArrayRef chunks) {
  const auto plan = check_chunk_sum_backward_inputs(grad, outs, weights, chunks, /*allow_half=*/true);
  const auto w = host_weights(weights);
  const auto inputs = contiguous_all(outs);
  const auto grad_c = grad.contiguous();
  const int64_t numel = grad_c.numel();
  const int L = static_cast<int>(plan.num_slots());

  std::vector<at::Tensor> grad_outs;
  for (const auto& out : outs) grad_outs.push_back(at::empty(out.sizes(), out.options()));
  std::vector<std::vector<double>> partial_dots(at::get_num_threads(), std::vector<double>(L, 0.0));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_c.scalar_type(), "chunk_sum_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_c.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      auto& dots = partial_dots[at::get_thread_num()];
      for_each_row_run(begin, end, plan.row, [&](int64_t b, int64_t r, int64_t n) {
        for (int s = 0; s < L; ++s) {
          const int64_t pos = b * plan.batch_stride[s] + plan.offset[s] + r;
          dots[s] += scale_and_dot(grad_outs[plan.term[s]].data_ptr<scalar_t>() + pos, g + b * plan.row + r,
                                   inputs[plan.term[s]].data_ptr<scalar_t>() + pos, static_cast<acc_t>(w[s]), n);
        }
      });
    });
  });

  auto grad_weights = at::zeros({L}, weights.options().dtype(at::kDouble).device(at::kCPU));
  double* gw = grad_weights.data_ptr<double>();
  for (const auto& dots : partial_dots) {
    for (int s = 0; s < L; ++s) gw[s] += dots[s];
  }
  return {grad_outs, grad_weights.to(weights.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("mixed_node", &mixed_node_cpu);
  m.impl("mixed_node_backward", &mixed_node_backward_cpu);
  m.impl("chunk_sum", &chunk_sum_cpu);
  m.impl("chunk_sum_backward", &chunk_sum_backward_cpu);
}

}  // namespace fastnas

// mixed_node on the CPU: one pass over the live operator outputs forward, one
// pass backward that writes every operator's gradient and accumulates the
// dot products that the alpha gradient needs.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/mixed_node.h"

namespace fastnas {
namespace {

// Elements handled per inner block: small enough that the block of the result
// (or of the incoming gradient) stays in L1 while every operator streams past.
constexpr int64_t kBlock = 32768;
// Independent partial sums per dot product (a multiple of any SIMD width).
constexpr int kLanes = 16;

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
  const auto plan = check_mixed_node_inputs(outs, alpha, mask, mode, temperature, /*allow_half=*/false);
  const auto w = weights_of(live_alpha_values(alpha, plan), plan);
  const auto inputs = contiguous_all(outs);
  auto result = at::empty(outs[0].sizes(), outs[0].options());
  const int64_t numel = result.numel();
  const int L = static_cast<int>(plan.num_live());

  AT_DISPATCH_FLOATING_TYPES(result.scalar_type(), "mixed_node_cpu", [&] {
    std::vector<const scalar_t*> src;
    std::vector<scalar_t> weight;
    for (int i = 0; i < L; ++i) {
      src.push_back(inputs[i].data_ptr<scalar_t>());
      weight.push_back(static_cast<scalar_t>(w[i]));
    }
    scalar_t* dst = result.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t n = std::min(end, lo + kBlock) - lo;
        scalar_t* __restrict__ out = dst + lo;
        // Locals with __restrict__: without them the compiler must assume that
        // `out` aliases the weights or pointers and cannot vectorize the loops.
        const scalar_t* __restrict__ first = src[0] + lo;
        const scalar_t w0 = weight[0];
        for (int64_t x = 0; x < n; ++x) out[x] = w0 * first[x];
        for (int i = 1; i < L; ++i) {
          const scalar_t* __restrict__ in = src[i] + lo;
          const scalar_t w = weight[i];
          for (int64_t x = 0; x < n; ++x) out[x] += w * in[x];
        }
      }
    });
  });
  return result;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_node_backward_cpu(
    const at::Tensor& grad, at::TensorList outs, const at::Tensor& alpha, const at::Tensor& mask,
    c10::string_view mode, double temperature) {
  const auto plan =
      check_mixed_node_backward_inputs(grad, outs, alpha, mask, mode, temperature, /*allow_half=*/false);
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

  AT_DISPATCH_FLOATING_TYPES(grad_c.scalar_type(), "mixed_node_backward_cpu", [&] {
    const scalar_t* g = grad_c.data_ptr<scalar_t>();
    at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      auto& dots = partial_dots[at::get_thread_num()];
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t n = std::min(end, lo + kBlock) - lo;
        const scalar_t* __restrict__ gb = g + lo;
        for (int i = 0; i < L; ++i) {
          const scalar_t* __restrict__ o = inputs[i].data_ptr<scalar_t>() + lo;
          scalar_t* __restrict__ go = grad_outs[i].data_ptr<scalar_t>() + lo;
          const scalar_t w_i = static_cast<scalar_t>(w[i]);
          // kLanes independent partial sums: the compiler vectorizes these, not one += chain.
          scalar_t lanes[kLanes] = {};
          int64_t x = 0;
          for (; x + kLanes <= n; x += kLanes) {
            for (int k = 0; k < kLanes; ++k) {
              go[x + k] = w_i * gb[x + k];
              lanes[k] += gb[x + k] * o[x + k];
            }
          }
          double block_dot = 0;
          for (int k = 0; k < kLanes; ++k) block_dot += lanes[k];
          for (; x < n; ++x) {
            go[x] = w_i * gb[x];
            block_dot += gb[x] * o[x];
          }
          dots[i] += block_dot;
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

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("mixed_node", &mixed_node_cpu);
  m.impl("mixed_node_backward", &mixed_node_backward_cpu);
}

}  // namespace fastnas

// depthwise_conv2d on the CPU: each (batch, channel) map is copied into a zero-padded
// buffer P of row width W_p = W + 2 p_w, and the output is laid out with that same row
// width (q = o_h W_p + o_w, the columns past W_out unused). With equal strides s, output q
// reads P[s q + o_t] through tap t (o_t = i d_h W_p + j d_w), so each tap is one long
// loop over the whole map that the compiler vectorizes, instead of one short loop per
// output row. Taps that read only padding are skipped.
// Why not oneDNN: on a search's small maps (8x8 to 2x2) its depthwise backward is slow, and
// aten's route to it costs ~8 operator calls per convolution, which dominate a dispatch-bound
// search step. Unequal strides (no DARTS operator has them) go to aten.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "../common/depthwise_conv2d.h"
#include "simd.h"

namespace fastnas {
namespace {

// Independent partial sums per dot product (a multiple of any SIMD width).
constexpr int kLanes = 16;

// ---- The loops over one map, on the arithmetic type A (float, or double); cloned per ISA (simd.h).

// out[q] = sum_t w[t] P[s q + offset[t]] for q < len; four taps per pass over out (fewer loads and stores).
template <typename A>
FASTNAS_ALWAYS_INLINE void forward_map_impl(A* __restrict__ out, const A* __restrict__ padded,
                                            const int64_t* offset, const A* w, int64_t taps, int64_t len,
                                            int64_t s) {
  for (int64_t q = 0; q < len; ++q) out[q] = 0;
  int64_t t = 0;
  if (s == 1) {
    for (; t + 4 <= taps; t += 4) {
      const A* __restrict__ a = padded + offset[t];
      const A* __restrict__ b = padded + offset[t + 1];
      const A* __restrict__ c = padded + offset[t + 2];
      const A* __restrict__ d = padded + offset[t + 3];
      const A wa = w[t], wb = w[t + 1], wc = w[t + 2], wd = w[t + 3];
      for (int64_t q = 0; q < len; ++q) out[q] += wa * a[q] + wb * b[q] + wc * c[q] + wd * d[q];
    }
  }
  for (; t < taps; ++t) {
    const A* __restrict__ in = padded + offset[t];
    const A wt = w[t];
    if (s == 1) {
      for (int64_t q = 0; q < len; ++q) out[q] += wt * in[q];
    } else {
      for (int64_t q = 0; q < len; ++q) out[q] += wt * in[s * q];
    }
  }
}

// grad_padded[s q + offset[t]] += w[t] g[q] (when grad_padded), tap_sums[t] += sum_q g[q] P[s q + offset[t]]
// (when tap_sums); g is zero on the unused columns.
template <typename A>
FASTNAS_ALWAYS_INLINE void backward_map_impl(A* __restrict__ grad_padded, double* tap_sums, const A* __restrict__ g,
                                             const A* __restrict__ padded, const int64_t* offset, const A* w,
                                             int64_t taps, int64_t len, int64_t s) {
  for (int64_t t = 0; t < taps; ++t) {
    if (tap_sums) {
      const A* __restrict__ in = padded + offset[t];
      A lanes[kLanes] = {};
      int64_t q = 0;
      for (; q + kLanes <= len; q += kLanes) {
        for (int k = 0; k < kLanes; ++k) lanes[k] += g[q + k] * in[s * (q + k)];
      }
      double sum = 0;
      for (int k = 0; k < kLanes; ++k) sum += lanes[k];
      for (; q < len; ++q) sum += g[q] * in[s * q];
      tap_sums[t] += sum;
    }
    if (grad_padded) {
      A* __restrict__ dst = grad_padded + offset[t];
      const A wt = w[t];
      if (s == 1) {
        for (int64_t q = 0; q < len; ++q) dst[q] += wt * g[q];
      } else {
        for (int64_t q = 0; q < len; ++q) dst[s * q] += wt * g[q];
      }
    }
  }
}

#define FASTNAS_DEPTHWISE_LOOPS(A)                                                                           \
  FASTNAS_CPU_CLONES void forward_map(A* __restrict__ out, const A* __restrict__ padded, const int64_t* offset, \
                                      const A* w, int64_t taps, int64_t len, int64_t s) {                   \
    forward_map_impl(out, padded, offset, w, taps, len, s);                                               \
  }                                                                                                        \
  FASTNAS_CPU_CLONES void backward_map(A* __restrict__ grad_padded, double* tap_sums, const A* __restrict__ g,  \
                                       const A* __restrict__ padded, const int64_t* offset, const A* w,        \
                                       int64_t taps, int64_t len, int64_t s) {                             \
    backward_map_impl(grad_padded, tap_sums, g, padded, offset, w, taps, len, s);                          \
  }
FASTNAS_DEPTHWISE_LOOPS(float)
FASTNAS_DEPTHWISE_LOOPS(double)
#undef FASTNAS_DEPTHWISE_LOOPS

// The padded layout of a map and the taps that read inside it.
struct MapLayout {
  int64_t padded_width, padded_size, len;  // len: the last output's q + 1
  std::vector<int64_t> offset, tap;        // per live tap: o_t, and its index i k_w + j in the kernel
  int64_t live() const { return static_cast<int64_t>(tap.size()); }
};

MapLayout map_layout(const DepthwiseGeometry& g) {
  MapLayout m;
  m.padded_width = g.w.size + 2 * g.w.padding;
  m.padded_size = (g.h.size + 2 * g.h.padding) * m.padded_width;
  m.len = g.h.out > 0 && g.w.out > 0 ? (g.h.out - 1) * m.padded_width + g.w.out : 0;
  for (int64_t i = 0; i < g.h.kernel; ++i) {
    const auto rows = g.h.valid_outputs(i);
    for (int64_t j = 0; j < g.w.kernel; ++j) {
      const auto cols = g.w.valid_outputs(j);
      if (rows.first == rows.second || cols.first == cols.second) continue;  // reads only padding
      m.offset.push_back(i * g.h.dilation * m.padded_width + j * g.w.dilation);
      m.tap.push_back(i * g.w.kernel + j);
    }
  }
  return m;
}

// P = the map src [H, W] in the zero padding, as A.
template <typename T, typename A>
void pad_map(A* padded, const T* src, const DepthwiseGeometry& g, const MapLayout& m) {
  std::fill(padded, padded + m.padded_size, A(0));
  for (int64_t h = 0; h < g.h.size; ++h) {
    A* row = padded + (h + g.h.padding) * m.padded_width + g.w.padding;
    for (int64_t w = 0; w < g.w.size; ++w) row[w] = static_cast<A>(src[h * g.w.size + w]);
  }
}

bool equal_strides(const DepthwiseGeometry& g) { return g.h.stride == g.w.stride; }

template <typename T, typename A>
void live_weights(A* w, const T* filter, const MapLayout& m) {
  for (int64_t t = 0; t < m.live(); ++t) w[t] = static_cast<A>(filter[m.tap[t]]);
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  const auto g = check_depthwise_conv2d_inputs(x, weight, stride, padding, dilation, /*allow_half=*/true);
  if (!equal_strides(g)) {
    return aten_depthwise_conv2d(x, weight, stride, padding, dilation);
  }
  const auto x_c = x.contiguous();
  const auto w_c = weight.contiguous();
  auto out = at::empty({g.batch, g.channels, g.h.out, g.w.out}, x.options());
  const auto m = map_layout(g);
  const int64_t in_plane = g.h.size * g.w.size, out_plane = g.h.out * g.w.out, taps = g.h.kernel * g.w.kernel;
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, m.len * m.live()));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = x_c.data_ptr<scalar_t>();
    const scalar_t* filters = w_c.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, g.batch * g.channels, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> padded(m.padded_size), result(m.len), w(m.live());
      for (int64_t plane = begin; plane < end; ++plane) {
        live_weights(w.data(), filters + (plane % g.channels) * taps, m);
        pad_map(padded.data(), src + plane * in_plane, g, m);
        forward_map(result.data(), padded.data(), m.offset.data(), w.data(), m.live(), m.len, g.h.stride);
        scalar_t* out_map = dst + plane * out_plane;
        for (int64_t oh = 0; oh < g.h.out; ++oh) {
          for (int64_t ow = 0; ow < g.w.out; ++ow) {
            out_map[oh * g.w.out + ow] = static_cast<scalar_t>(result[oh * m.padded_width + ow]);
          }
        }
      }
    });
  });
  return out;
}

// One task per channel: it owns grad_weight[c] (summed over the batch) and grad_x[:, c].
std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                                 const at::Tensor& weight, at::IntArrayRef stride,
                                                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                 std::array<bool, 2> output_mask) {
  const auto g = check_depthwise_conv2d_backward_inputs(grad, x, weight, stride, padding, dilation,
                                                        /*allow_half=*/true);
  if (!equal_strides(g)) {
    return aten_depthwise_conv2d_backward(grad, x, weight, stride, padding, dilation, output_mask);
  }
  const bool need_x = output_mask[0], need_weight = output_mask[1];
  const auto x_c = x.contiguous();
  const auto w_c = weight.contiguous();
  const auto grad_c = grad.contiguous();
  at::Tensor grad_x, grad_weight;
  if (need_x) grad_x = at::empty(x.sizes(), x.options());
  if (need_weight) grad_weight = at::empty(weight.sizes(), weight.options());
  const auto m = map_layout(g);
  const int64_t in_plane = g.h.size * g.w.size, out_plane = g.h.out * g.w.out, taps = g.h.kernel * g.w.kernel;
  const int64_t grain = std::max<int64_t>(
      1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, g.batch * (m.len * m.live() + m.padded_size)));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv2d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xs = x_c.data_ptr<scalar_t>();
    const scalar_t* filters = w_c.data_ptr<scalar_t>();
    const scalar_t* grads = grad_c.data_ptr<scalar_t>();
    at::parallel_for(0, g.channels, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> padded(m.padded_size), grad_padded(need_x ? m.padded_size : 0), g_map(m.len);
      std::vector<double> live_sums(m.live());
      std::vector<acc_t> w(m.live());
      for (int64_t c = begin; c < end; ++c) {
        live_weights(w.data(), filters + c * taps, m);
        std::fill(live_sums.begin(), live_sums.end(), 0.0);
        for (int64_t b = 0; b < g.batch; ++b) {
          const int64_t plane = b * g.channels + c;
          pad_map(padded.data(), xs + plane * in_plane, g, m);
          std::fill(g_map.begin(), g_map.end(), acc_t(0));  // zero on the unused columns
          for (int64_t oh = 0; oh < g.h.out; ++oh) {
            for (int64_t ow = 0; ow < g.w.out; ++ow) {
              g_map[oh * m.padded_width + ow] = static_cast<acc_t>(grads[plane * out_plane + oh * g.w.out + ow]);
            }
          }
          if (need_x) std::fill(grad_padded.begin(), grad_padded.end(), acc_t(0));
          backward_map(need_x ? grad_padded.data() : nullptr, need_weight ? live_sums.data() : nullptr,
                       g_map.data(), padded.data(), m.offset.data(), w.data(), m.live(), m.len, g.h.stride);
          if (need_x) {
            scalar_t* gx = grad_x.data_ptr<scalar_t>() + plane * in_plane;
            for (int64_t h = 0; h < g.h.size; ++h) {
              const acc_t* row = grad_padded.data() + (h + g.h.padding) * m.padded_width + g.w.padding;
              for (int64_t col = 0; col < g.w.size; ++col) gx[h * g.w.size + col] = static_cast<scalar_t>(row[col]);
            }
          }
        }
        if (need_weight) {
          scalar_t* gw = grad_weight.data_ptr<scalar_t>() + c * taps;
          std::fill(gw, gw + taps, scalar_t(0));  // the taps that read only padding
          for (int64_t t = 0; t < m.live(); ++t) gw[m.tap[t]] = static_cast<scalar_t>(live_sums[t]);
        }
      }
    });
  });
  return {grad_x, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cpu);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cpu);
}

}  // namespace fastnas

// depthwise_conv2d: argument checks and the geometry shared by the CPU and CUDA
// kernels of F.conv2d(x [B, C, H, W], weight [C, 1, k_h, k_w], groups=C) with
// stride, padding and dilation, no bias. Output [B, C, H_out, W_out] with
//   out[b, c, o_h, o_w] = sum_{i, j} weight[c, 0, i, j] * x[b, c, o_h s_h + i d_h - p_h, o_w s_w + j d_w - p_w],
// reads outside the map being zero padding.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "checks.h"

namespace fastnas {

// One spatial dimension: input size, kernel taps, stride, padding, dilation, output size.
struct ConvAxis {
  int64_t size, kernel, stride, padding, dilation, out;

  // Input index read by output o through tap t (may lie in the padding).
  int64_t input(int64_t o, int64_t t) const { return o * stride + t * dilation - padding; }

  // [first, last) outputs whose tap t reads inside the map: 0 <= input(o, t) < size.
  std::pair<int64_t, int64_t> valid_outputs(int64_t t) const {
    const int64_t shift = padding - t * dilation;  // input(o, t) = o * stride - shift
    const int64_t first = shift <= 0 ? 0 : (shift + stride - 1) / stride;
    const int64_t top = size - 1 + shift;  // o * stride <= top
    const int64_t last = top < 0 ? 0 : top / stride + 1;
    return {std::min(first, out), std::max(std::min(last, out), std::min(first, out))};
  }
};

struct DepthwiseGeometry {
  int64_t batch, channels;
  ConvAxis h, w;
};

inline ConvAxis conv_axis(int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                          const char* dim) {
  TORCH_CHECK(stride >= 1, "stride: expected positive values, got ", stride, " for ", dim);
  TORCH_CHECK(dilation >= 1, "dilation: expected positive values, got ", dilation, " for ", dim);
  TORCH_CHECK(padding >= 0, "padding: expected non-negative values, got ", padding, " for ", dim);
  const int64_t span = dilation * (kernel - 1) + 1;
  TORCH_CHECK(size + 2 * padding >= span, "x: the padded input ", dim, " (", size, " + 2 * ", padding,
              ") is smaller than the dilated kernel (", span, "): no output");
  return {size, kernel, stride, padding, dilation, (size + 2 * padding - span) / stride + 1};
}

inline void check_pair(at::IntArrayRef values, const char* name) {
  TORCH_CHECK(values.size() == 2, name, ": expected two values (height, width), got ", values.size());
}

// Validates x and weight and the convolution's settings; returns the geometry.
inline DepthwiseGeometry check_depthwise_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool allow_half) {
  check_dim(x, "x", 4, "[B, C, H, W]");
  check_dim(weight, "weight", 4, "[C, 1, k_h, k_w]");
  check_floating(x, "x", allow_half);
  check_same_dtype(weight, "weight", x, "x");
  check_same_device(weight, "weight", x, "x");
  TORCH_CHECK(weight.size(0) == x.size(1) && weight.size(1) == 1, "weight: expected shape [", x.size(1),
              ", 1, k_h, k_w] (one filter per channel of x), got ", weight.sizes());
  TORCH_CHECK(weight.size(2) >= 1 && weight.size(3) >= 1, "weight: expected at least one tap, got ",
              weight.sizes());
  check_pair(stride, "stride");
  check_pair(padding, "padding");
  check_pair(dilation, "dilation");
  return {x.size(0), x.size(1),
          conv_axis(x.size(2), weight.size(2), stride[0], padding[0], dilation[0], "height"),
          conv_axis(x.size(3), weight.size(3), stride[1], padding[1], dilation[1], "width")};
}

// depthwise_conv2d_backward: the forward's checks plus the output gradient's shape.
inline DepthwiseGeometry check_depthwise_conv2d_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                                                const at::Tensor& weight, at::IntArrayRef stride,
                                                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                bool allow_half) {
  const auto g = check_depthwise_conv2d_inputs(x, weight, stride, padding, dilation, allow_half);
  check_same_dtype(grad, "grad", x, "x");
  check_same_device(grad, "grad", x, "x");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == g.batch && grad.size(1) == g.channels &&
                  grad.size(2) == g.h.out && grad.size(3) == g.w.out,
              "grad: expected the output's shape [", g.batch, ", ", g.channels, ", ", g.h.out, ", ", g.w.out,
              "], got ", grad.sizes());
  return g;
}

// The convolution and its input and weight gradients through aten (cuDNN on a GPU): the CUDA
// kernels, and the CPU kernels' fallback for unequal strides.
inline at::Tensor aten_depthwise_conv2d(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation) {
  return at::convolution(x, weight, c10::nullopt, stride, padding, dilation, /*transposed=*/false, {0, 0},
                         x.size(1));
}

inline std::tuple<at::Tensor, at::Tensor> aten_depthwise_conv2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, std::array<bool, 2> output_mask) {
  auto grads = at::convolution_backward(grad, x, weight, c10::nullopt, stride, padding, dilation,
                                        /*transposed=*/false, {0, 0}, x.size(1),
                                        {output_mask[0], output_mask[1], false});
  return {std::get<0>(grads), std::get<1>(grads)};
}

}  // namespace fastnas

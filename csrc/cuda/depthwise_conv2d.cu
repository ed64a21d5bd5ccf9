// depthwise_conv2d on CUDA: cuDNN's (or aten's native) depthwise convolution
// through at::convolution and at::convolution_backward. GPUs have fast depthwise
// kernels for every shape a search meets; the CPU kernel exists for the CPU's
// sake (csrc/cpu/depthwise_conv2d.cpp), this one so the op runs on every device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/depthwise_conv2d.h"

namespace fastnas {
namespace {

at::Tensor depthwise_conv2d_cuda(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_depthwise_conv2d_inputs(x, weight, stride, padding, dilation, /*allow_half=*/true);
  const c10::cuda::CUDAGuard guard(x.device());
  return aten_depthwise_conv2d(x, weight, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                                  const at::Tensor& weight, at::IntArrayRef stride,
                                                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                  std::array<bool, 2> output_mask) {
  check_depthwise_conv2d_backward_inputs(grad, x, weight, stride, padding, dilation, /*allow_half=*/true);
  const c10::cuda::CUDAGuard guard(x.device());
  return aten_depthwise_conv2d_backward(grad, x, weight, stride, padding, dilation, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cuda);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cuda);
}

}  // namespace fastnas

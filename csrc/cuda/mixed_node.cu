// mixed_node on CUDA. Forward: one kernel reads every live operator output
// once and writes the node value. Backward: one kernel writes every operator's
// gradient and reduces the dot products <grad, outs[i]>, and a one-block
// kernel turns those into the alpha gradient. Each block computes the operator
// weights itself from alpha (a few dozen numbers), so no extra launch or
// host synchronization is needed.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/mixed_node.h"

namespace fastnas {
namespace {

constexpr int kThreads = 256;
constexpr int kElemsPerThread = 4;  // per loop step: amortizes the warp reductions of the backward

// Passed by value as a kernel argument (about 3 KiB at kMaxLiveOps = 128).
template <typename scalar_t>
struct LiveOps {
  const scalar_t* src[kMaxLiveOps];
  scalar_t* grad[kMaxLiveOps];
  int32_t index[kMaxLiveOps];
  int32_t edge[kMaxLiveOps];
  int count;
};

static_assert(sizeof(LiveOps<double>) + 64 <= 4096, "LiveOps exceeds the 4 KiB kernel argument limit");

template <typename scalar_t>
LiveOps<scalar_t> live_ops(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& grads,
                           const MixedNodePlan& plan) {
  LiveOps<scalar_t> ops;
  ops.count = static_cast<int>(plan.num_live());
  for (int i = 0; i < ops.count; ++i) {
    ops.src[i] = outs[i].data_ptr<scalar_t>();
    ops.grad[i] = grads.empty() ? nullptr : grads[i].data_ptr<scalar_t>();
    ops.index[i] = plan.live_index[i];
    ops.edge[i] = plan.live_edge[i];
  }
  return ops;
}

// Loads the live alpha values in parallel, then one thread derives the weights.
template <typename scalar_t, typename acc_t>
__device__ void block_weights(const LiveOps<scalar_t>& ops, const acc_t* alpha, MixedNodeMode mode,
                              acc_t inv_temperature, acc_t* alpha_live, acc_t* w) {
  for (int i = threadIdx.x; i < ops.count; i += blockDim.x) alpha_live[i] = alpha[ops.index[i]];
  __syncthreads();
  if (threadIdx.x == 0) live_weights<acc_t>(alpha_live, ops.edge, ops.count, mode, inv_temperature, w);
  __syncthreads();
}

template <typename scalar_t, typename acc_t>
__global__ void mixed_node_forward_kernel(LiveOps<scalar_t> ops, const acc_t* alpha, MixedNodeMode mode,
                                          acc_t inv_temperature, scalar_t* out, int64_t n) {
  __shared__ acc_t alpha_live[kMaxLiveOps];
  __shared__ acc_t w[kMaxLiveOps];
  block_weights(ops, alpha, mode, inv_temperature, alpha_live, w);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; x < n; x += stride) {
    acc_t sum = 0;
    for (int i = 0; i < ops.count; ++i) sum += w[i] * static_cast<acc_t>(ops.src[i][x]);
    out[x] = static_cast<scalar_t>(sum);
  }
}

template <typename acc_t>
__device__ acc_t warp_sum(acc_t v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Writes grad_outs[i] = w[i] * grad and adds sum(grad * outs[i]) into dots[i].
// The loop bound is uniform over the block so every lane reaches the shuffles.
template <typename scalar_t, typename acc_t>
__global__ void mixed_node_backward_kernel(LiveOps<scalar_t> ops, const acc_t* alpha, MixedNodeMode mode,
                                           acc_t inv_temperature, const scalar_t* grad, int64_t n,
                                           acc_t* dots) {
  __shared__ acc_t alpha_live[kMaxLiveOps];
  __shared__ acc_t w[kMaxLiveOps];
  __shared__ acc_t block_dot[kMaxLiveOps];
  for (int i = threadIdx.x; i < ops.count; i += blockDim.x) block_dot[i] = 0;
  block_weights(ops, alpha, mode, inv_temperature, alpha_live, w);

  const int64_t step = static_cast<int64_t>(blockDim.x) * kElemsPerThread;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * step; base < n; base += step * gridDim.x) {
    acc_t g[kElemsPerThread];
#pragma unroll
    for (int j = 0; j < kElemsPerThread; ++j) {
      const int64_t x = base + j * blockDim.x + threadIdx.x;
      g[j] = x < n ? static_cast<acc_t>(grad[x]) : acc_t(0);
    }
    for (int i = 0; i < ops.count; ++i) {
      acc_t dot = 0;
#pragma unroll
      for (int j = 0; j < kElemsPerThread; ++j) {
        const int64_t x = base + j * blockDim.x + threadIdx.x;
        if (x < n) {
          ops.grad[i][x] = static_cast<scalar_t>(w[i] * g[j]);
          dot += g[j] * static_cast<acc_t>(ops.src[i][x]);
        }
      }
      dot = warp_sum(dot);
      if (threadIdx.x % 32 == 0) atomicAdd(&block_dot[i], dot);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < ops.count; i += blockDim.x) atomicAdd(&dots[i], block_dot[i]);
}

// One thread: alpha gradient of the live entries from the reduced dot products.
template <typename scalar_t, typename acc_t>
__global__ void mixed_node_alpha_grad_kernel(LiveOps<scalar_t> ops, const acc_t* alpha, MixedNodeMode mode,
                                             acc_t inv_temperature, const acc_t* dots, acc_t* grad_alpha) {
  acc_t alpha_live[kMaxLiveOps], w[kMaxLiveOps], grad_live[kMaxLiveOps];
  for (int i = 0; i < ops.count; ++i) alpha_live[i] = alpha[ops.index[i]];
  live_weights<acc_t>(alpha_live, ops.edge, ops.count, mode, inv_temperature, w);
  live_alpha_grad<acc_t>(alpha_live, w, dots, ops.edge, ops.count, mode, inv_temperature, grad_live);
  for (int i = 0; i < ops.count; ++i) grad_alpha[ops.index[i]] = grad_live[i];
}

int grid_for(int64_t n, int64_t per_block) {
  const int64_t wanted = (n + per_block - 1) / per_block;
  const int64_t resident = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 16;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, resident)));
}

// alpha in the accumulation type of the outputs' dtype (float for half/bfloat16).
at::Tensor alpha_in_acc_type(const at::Tensor& alpha, at::ScalarType out_dtype) {
  const auto acc = out_dtype == at::kDouble ? at::kDouble : at::kFloat;
  return alpha.detach().to(acc).contiguous();
}

at::Tensor mixed_node_cuda(at::TensorList outs, const at::Tensor& alpha, const at::Tensor& mask,
                           c10::string_view mode, double temperature) {
  const auto plan = check_mixed_node_inputs(outs, alpha, mask, mode, temperature, /*allow_half=*/true);
  const at::cuda::OptionalCUDAGuard guard(alpha.device());
  const auto inputs = contiguous_all(outs);
  const auto alpha_acc = alpha_in_acc_type(alpha, outs[0].scalar_type());
  auto result = at::empty(outs[0].sizes(), outs[0].options());
  const int64_t n = result.numel();
  if (n == 0) return result;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, result.scalar_type(), "mixed_node_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    mixed_node_forward_kernel<scalar_t, acc_t>
        <<<grid_for(n, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            live_ops<scalar_t>(inputs, {}, plan), alpha_acc.data_ptr<acc_t>(), plan.mode,
            static_cast<acc_t>(plan.inv_temperature), result.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_node_backward_cuda(
    const at::Tensor& grad, at::TensorList outs, const at::Tensor& alpha, const at::Tensor& mask,
    c10::string_view mode, double temperature) {
  const auto plan =
      check_mixed_node_backward_inputs(grad, outs, alpha, mask, mode, temperature, /*allow_half=*/true);
  // Float atomics sum the blocks' dot products in arrival order: the alpha gradient may differ in its
  // last bits between runs, so torch.use_deterministic_algorithms(True) is told (as for index_add_).
  at::globalContext().alertNotDeterministic("fastnas::mixed_node_backward (CUDA)");
  const at::cuda::OptionalCUDAGuard guard(alpha.device());
  const auto inputs = contiguous_all(outs);
  const auto grad_c = grad.contiguous();
  const auto alpha_acc = alpha_in_acc_type(alpha, outs[0].scalar_type());
  const int64_t n = grad_c.numel();

  std::vector<at::Tensor> grad_outs;
  for (int64_t i = 0; i < plan.num_live(); ++i) grad_outs.push_back(at::empty(outs[0].sizes(), outs[0].options()));
  auto dots = at::zeros({plan.num_live()}, alpha_acc.options());
  auto grad_alpha = at::zeros_like(alpha_acc);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_c.scalar_type(), "mixed_node_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const auto ops = live_ops<scalar_t>(inputs, grad_outs, plan);
    const auto stream = at::cuda::getCurrentCUDAStream();
    const auto inv_t = static_cast<acc_t>(plan.inv_temperature);
    if (n > 0) {
      mixed_node_backward_kernel<scalar_t, acc_t><<<grid_for(n, kThreads * kElemsPerThread), kThreads, 0, stream>>>(
          ops, alpha_acc.data_ptr<acc_t>(), plan.mode, inv_t, grad_c.data_ptr<scalar_t>(), n,
          dots.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    mixed_node_alpha_grad_kernel<scalar_t, acc_t><<<1, 1, 0, stream>>>(
        ops, alpha_acc.data_ptr<acc_t>(), plan.mode, inv_t, dots.data_ptr<acc_t>(), grad_alpha.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_outs, grad_alpha.to(alpha.scalar_type())};
}

// ---- chunk_sum: slot s of result row b is src[s][b * batch_stride[s] + r]; the weights stay on the device.

template <typename scalar_t>
struct ChunkSlots {
  const scalar_t* src[kMaxLiveOps];  // each slot's first element
  scalar_t* grad[kMaxLiveOps];       // the same place in its term's gradient
  int64_t batch_stride[kMaxLiveOps];
  int count;
};

static_assert(sizeof(ChunkSlots<double>) + 64 <= 4096, "ChunkSlots exceeds the 4 KiB kernel argument limit");

template <typename scalar_t>
ChunkSlots<scalar_t> chunk_slots(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& grads,
                                 const ChunkSumPlan& plan) {
  ChunkSlots<scalar_t> slots;
  slots.count = static_cast<int>(plan.num_slots());
  for (int s = 0; s < slots.count; ++s) {
    slots.src[s] = outs[plan.term[s]].data_ptr<scalar_t>() + plan.offset[s];
    slots.grad[s] = grads.empty() ? nullptr : grads[plan.term[s]].data_ptr<scalar_t>() + plan.offset[s];
    slots.batch_stride[s] = plan.batch_stride[s];
  }
  return slots;
}

template <typename scalar_t, typename acc_t>
__global__ void chunk_sum_forward_kernel(ChunkSlots<scalar_t> slots, const acc_t* weights, scalar_t* out,
                                         int64_t n, int64_t row) {
  __shared__ acc_t w[kMaxLiveOps];
  for (int s = threadIdx.x; s < slots.count; s += blockDim.x) w[s] = weights[s];
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; x < n; x += stride) {
    const int64_t b = x / row, r = x - b * row;
    acc_t sum = 0;
    for (int s = 0; s < slots.count; ++s) sum += w[s] * static_cast<acc_t>(slots.src[s][b * slots.batch_stride[s] + r]);
    out[x] = static_cast<scalar_t>(sum);
  }
}

// Writes every slot's gradient w[s] * grad and adds sum(grad * slot) into dots[s]; the loop bound is
// uniform over the block so every lane reaches the shuffles (as mixed_node_backward_kernel).
template <typename scalar_t, typename acc_t>
__global__ void chunk_sum_backward_kernel(ChunkSlots<scalar_t> slots, const acc_t* weights, const scalar_t* grad,
                                          int64_t n, int64_t row, acc_t* dots) {
  __shared__ acc_t w[kMaxLiveOps];
  __shared__ acc_t block_dot[kMaxLiveOps];
  for (int s = threadIdx.x; s < slots.count; s += blockDim.x) {
    w[s] = weights[s];
    block_dot[s] = 0;
  }
  __syncthreads();
  const int64_t step = static_cast<int64_t>(blockDim.x) * kElemsPerThread;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * step; base < n; base += step * gridDim.x) {
    acc_t g[kElemsPerThread];
    int64_t b[kElemsPerThread], r[kElemsPerThread];
#pragma unroll
    for (int j = 0; j < kElemsPerThread; ++j) {
      const int64_t x = base + j * blockDim.x + threadIdx.x;
      g[j] = x < n ? static_cast<acc_t>(grad[x]) : acc_t(0);
      b[j] = x / row;
      r[j] = x - b[j] * row;
    }
    for (int s = 0; s < slots.count; ++s) {
      acc_t dot = 0;
#pragma unroll
      for (int j = 0; j < kElemsPerThread; ++j) {
        const int64_t x = base + j * blockDim.x + threadIdx.x;
        if (x < n) {
          const int64_t at_slot = b[j] * slots.batch_stride[s] + r[j];
          slots.grad[s][at_slot] = static_cast<scalar_t>(w[s] * g[j]);
          dot += g[j] * static_cast<acc_t>(slots.src[s][at_slot]);
        }
      }
      dot = warp_sum(dot);
      if (threadIdx.x % 32 == 0) atomicAdd(&block_dot[s], dot);
    }
  }
  __syncthreads();
  for (int s = threadIdx.x; s < slots.count; s += blockDim.x) atomicAdd(&dots[s], block_dot[s]);
}

at::Tensor chunk_sum_cuda(at::TensorList outs, const at::Tensor& weights, at::IntArrayRef chunks) {
  const auto plan = check_chunk_sum_inputs(outs, weights, chunks, /*allow_half=*/true);
  const at::cuda::OptionalCUDAGuard guard(outs[0].device());
  const auto inputs = contiguous_all(outs);
  const auto weights_acc = alpha_in_acc_type(weights, outs[0].scalar_type());
  auto result = at::empty(plan.result_sizes, outs[0].options());
  const int64_t n = result.numel();
  if (n == 0) return result;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, result.scalar_type(), "chunk_sum_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    chunk_sum_forward_kernel<scalar_t, acc_t><<<grid_for(n, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        chunk_slots<scalar_t>(inputs, {}, plan), weights_acc.data_ptr<acc_t>(), result.data_ptr<scalar_t>(), n,
        plan.row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> chunk_sum_backward_cuda(const at::Tensor& grad, at::TensorList outs,
                                                                        const at::Tensor& weights,
                                                                        at::IntArrayRef chunks) {
  const auto plan = check_chunk_sum_backward_inputs(grad, outs, weights, chunks, /*allow_half=*/true);
  at::globalContext().alertNotDeterministic("fastnas::chunk_sum_backward (CUDA)");
  const at::cuda::OptionalCUDAGuard guard(outs[0].device());
  const auto inputs = contiguous_all(outs);
  const auto grad_c = grad.contiguous();
  const auto weights_acc = alpha_in_acc_type(weights, outs[0].scalar_type());
  const int64_t n = grad_c.numel();

  std::vector<at::Tensor> grad_outs;
  for (const auto& out : outs) grad_outs.push_back(at::empty(out.sizes(), out.options()));
  auto dots = at::zeros({plan.num_slots()}, weights_acc.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_c.scalar_type(), "chunk_sum_backward_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      chunk_sum_backward_kernel<scalar_t, acc_t>
          <<<grid_for(n, kThreads * kElemsPerThread), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              chunk_slots<scalar_t>(inputs, grad_outs, plan), weights_acc.data_ptr<acc_t>(),
              grad_c.data_ptr<scalar_t>(), n, plan.row, dots.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_outs, dots.to(weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) {
  m.impl("mixed_node", &mixed_node_cuda);
  m.impl("mixed_node_backward", &mixed_node_backward_cuda);
  m.impl("chunk_sum", &chunk_sum_cuda);
  m.impl("chunk_sum_backward", &chunk_sum_backward_cuda);
}

}  // namespace fastnas

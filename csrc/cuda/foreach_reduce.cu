// foreach_reduce on CUDA, multi-tensor-apply style: a launch argument holds up
// to kMaxTensors tensor pointers and a table block -> (tensor slot, chunk) of
// up to kMaxBlocks blocks, so a list of ~100 layer tensors takes 1-3 launches.
// Each block reduces its chunk in the accumulation type and adds the result
// atomically to its tensor's total; a finalize kernel then divides (mean),
// takes the root (l2) and casts. The backward kernel walks the same table and
// writes every gradient tensor.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "../common/foreach_reduce.h"

namespace fastnas {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTensors = 64;
constexpr int kMaxBlocks = 320;
// Elements per block: at least kMinChunk, more when the list is so large that
// about kTargetBlocks blocks (a few waves on any GPU) already cover it.
constexpr int64_t kMinChunk = 16 * kThreads * 4;
constexpr int64_t kTargetBlocks = 2048;
constexpr int kMaxFinalize = 448;

template <typename scalar_t>
struct TensorTable {
  const scalar_t* input[kMaxTensors];
  scalar_t* output[kMaxTensors];  // gradients (backward only)
  int64_t numel[kMaxTensors];
  int32_t index[kMaxTensors];  // position of the tensor in the list
  int32_t block_chunk[kMaxBlocks];
  uint8_t block_slot[kMaxBlocks];
};
// Kernel arguments are limited to 4 KiB (before CUDA 12.1 / Volta).
static_assert(sizeof(TensorTable<double>) + 64 <= 4096, "TensorTable exceeds the kernel argument limit");

struct FinalizeTable {
  int64_t numel[kMaxFinalize];
  int32_t first;
  int32_t count;
};
static_assert(sizeof(FinalizeTable) + 64 <= 4096, "FinalizeTable exceeds the kernel argument limit");

// Sum over the block; the result is valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value) {
  __shared__ acc_t warp_sums[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kThreads / 32 ? warp_sums[lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    foreach_reduce_kernel(const TensorTable<scalar_t> table, int64_t chunk, ForeachTransform transform,
                          ForeachReduction reduction, acc_t* __restrict__ totals) {
  const int slot = table.block_slot[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * chunk;
  const int64_t end = table.numel[slot] < begin + chunk ? table.numel[slot] : begin + chunk;
  const scalar_t* __restrict__ x = table.input[slot];
  acc_t sum = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const acc_t y = foreach_transform_value(static_cast<acc_t>(x[i]), transform);
    sum += foreach_reduction_term(y, reduction);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) atomicAdd(totals + table.index[slot], sum);
}

// out[first + i] = finish(totals[first + i]) for the `count` tensors of the table.
template <typename acc_t, typename out_t>
__global__ void foreach_reduce_finalize_kernel(const FinalizeTable table, ForeachReduction reduction,
                                               const acc_t* __restrict__ totals, out_t* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < table.count) {
    const int t = table.first + i;
    out[t] = static_cast<out_t>(foreach_reduction_finish(totals[t], table.numel[i], reduction));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    foreach_reduce_backward_kernel(const TensorTable<scalar_t> table, int64_t chunk, ForeachTransform transform,
                                   ForeachReduction reduction, const scalar_t* __restrict__ grad,
                                   const acc_t* __restrict__ values) {
  const int slot = table.block_slot[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * chunk;
  const int64_t numel = table.numel[slot];
  const int64_t end = numel < begin + chunk ? numel : begin + chunk;
  const scalar_t* __restrict__ x = table.input[slot];
  scalar_t* __restrict__ out = table.output[slot];
  const int index = table.index[slot];
  const acc_t g = static_cast<acc_t>(grad[index]);
  // Only l2 reads the reduction value (the norm); only l1 and l2 read y.
  const acc_t value = reduction == ForeachReduction::L2 ? values[index] : acc_t(0);
  const bool needs_y = reduction == ForeachReduction::L1 || reduction == ForeachReduction::L2;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const acc_t xi = static_cast<acc_t>(x[i]);
    const acc_t y = needs_y ? foreach_transform_value(xi, transform) : acc_t(0);
    out[i] = static_cast<scalar_t>(g * foreach_reduction_grad(y, value, numel, reduction) *
                                   foreach_transform_grad(xi, transform));
  }
}

int64_t chunk_size(const std::vector<at::Tensor>& inputs) {
  int64_t total = 0;
  for (const auto& t : inputs) total += t.numel();
  const int64_t step = kThreads * 4;
  const int64_t wanted = (total + kTargetBlocks - 1) / kTargetBlocks;
  return std::max(kMinChunk, (wanted + step - 1) / step * step);
}

// Fills tables of at most kMaxTensors tensors and kMaxBlocks blocks with every
// chunk of every non-empty input and calls launch(table, blocks) for each.
template <typename scalar_t, typename Launch>
void for_each_table(const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>* outputs, int64_t chunk,
                    const Launch& launch) {
  TensorTable<scalar_t> table{};  // unused slots zeroed: never read, but no garbage passed
  int tensors = 0, blocks = 0;
  auto flush = [&] {
    if (blocks > 0) launch(table, blocks);
    tensors = 0;
    blocks = 0;
  };
  auto add_tensor = [&](size_t t) {
    table.input[tensors] = inputs[t].data_ptr<scalar_t>();
    table.output[tensors] = outputs ? (*outputs)[t].data_ptr<scalar_t>() : nullptr;
    table.numel[tensors] = inputs[t].numel();
    table.index[tensors] = static_cast<int32_t>(t);
    return tensors++;
  };
  for (size_t t = 0; t < inputs.size(); ++t) {
    const int64_t numel = inputs[t].numel();
    if (numel == 0) continue;
    if (tensors == kMaxTensors) flush();
    int slot = add_tensor(t);
    const int64_t chunks = (numel + chunk - 1) / chunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (blocks == kMaxBlocks) {
        flush();
        slot = add_tensor(t);  // the rest of this tensor starts the next table
      }
      table.block_slot[blocks] = static_cast<uint8_t>(slot);
      table.block_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
    }
  }
  flush();
}

// reduction(transform(x)) of every input into out (length inputs.size()).
template <typename scalar_t, typename acc_t, typename out_t>
void reduce_into(const std::vector<at::Tensor>& inputs, const ForeachReducePlan& plan, out_t* out,
                 const at::TensorOptions& acc_options) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t chunk = chunk_size(inputs);
  auto totals = at::zeros({static_cast<int64_t>(inputs.size())}, acc_options);
  acc_t* totals_ptr = totals.data_ptr<acc_t>();
  for_each_table<scalar_t>(inputs, nullptr, chunk, [&](const TensorTable<scalar_t>& table, int blocks) {
    foreach_reduce_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(table, chunk, plan.transform,
                                                                            plan.reduction, totals_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  FinalizeTable fin{};
  for (size_t first = 0; first < inputs.size(); first += kMaxFinalize) {
    fin.first = static_cast<int32_t>(first);
    fin.count = static_cast<int32_t>(std::min<size_t>(kMaxFinalize, inputs.size() - first));
    for (int i = 0; i < fin.count; ++i) fin.numel[i] = inputs[first + i].numel();
    const int threads = 128;
    foreach_reduce_finalize_kernel<acc_t, out_t><<<(fin.count + threads - 1) / threads, threads, 0, stream>>>(
        fin, plan.reduction, totals_ptr, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor foreach_reduce_cuda(at::TensorList tensors, c10::string_view transform, c10::string_view reduction) {
  const auto plan = check_foreach_reduce_inputs(tensors, transform, reduction, /*allow_half=*/true);
  // Blocks add their partial sums with float atomics, in arrival order (see mixed_node_backward).
  at::globalContext().alertNotDeterministic("fastnas::foreach_reduce (CUDA)");
  const at::cuda::OptionalCUDAGuard guard(tensors[0].device());
  const auto inputs = contiguous_all(tensors);
  auto result = at::empty({static_cast<int64_t>(inputs.size())}, inputs[0].options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, result.scalar_type(), "foreach_reduce_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const auto acc_options = inputs[0].options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    reduce_into<scalar_t, acc_t, scalar_t>(inputs, plan, result.data_ptr<scalar_t>(), acc_options);
  });
  return result;
}

std::vector<at::Tensor> foreach_reduce_backward_cuda(const at::Tensor& grad, at::TensorList tensors,
                                                     c10::string_view transform, c10::string_view reduction) {
  const auto plan = check_foreach_reduce_backward_inputs(grad, tensors, transform, reduction, /*allow_half=*/true);
  // l2 recomputes each norm with the forward's float atomics (the other reductions use none).
  if (plan.reduction == ForeachReduction::L2) {
    at::globalContext().alertNotDeterministic("fastnas::foreach_reduce_backward (CUDA, reduction='l2')");
  }
  const at::cuda::OptionalCUDAGuard guard(tensors[0].device());
  const auto inputs = contiguous_all(tensors);
  const auto grad_c = grad.contiguous();
  std::vector<at::Tensor> grads;
  grads.reserve(inputs.size());
  for (const auto& t : inputs) grads.push_back(at::empty_like(t));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_c.scalar_type(), "foreach_reduce_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const auto acc_options = inputs[0].options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    // l2 needs each tensor's norm: recompute it (the schema does not pass the output).
    at::Tensor values;
    const acc_t* values_ptr = nullptr;
    if (plan.reduction == ForeachReduction::L2) {
      values = at::empty({static_cast<int64_t>(inputs.size())}, acc_options);
      reduce_into<scalar_t, acc_t, acc_t>(inputs, plan, values.data_ptr<acc_t>(), acc_options);
      values_ptr = values.data_ptr<acc_t>();
    }
    const auto stream = at::cuda::getCurrentCUDAStream();
    const int64_t chunk = chunk_size(inputs);
    const scalar_t* grad_ptr = grad_c.data_ptr<scalar_t>();
    for_each_table<scalar_t>(inputs, &grads, chunk, [&](const TensorTable<scalar_t>& table, int blocks) {
      foreach_reduce_backward_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
          table, chunk, plan.transform, plan.reduction, grad_ptr, values_ptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) {
  m.impl("foreach_reduce", &foreach_reduce_cuda);
  m.impl("foreach_reduce_backward", &foreach_reduce_backward_cuda);
}

}  // namespace fastnas

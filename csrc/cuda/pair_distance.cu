// pair_distance on CUDA: one block per row. Each thread strides over the row,
// the block reduces the pre-pass (kl: maxima; pearson: sums) and then the
// kPairSums row sums in the accumulation type (float for half/bfloat16/float,
// double for double); forward and backward use the formulas of the common
// header. gram_distance is the device-generic ATen implementation of the
// header, registered for CUDA here.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/pair_distance.h"

namespace fastnas {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 256;

// One block per row: the grid's x dimension bounds the batch.
void check_grid(int64_t B) {
  TORCH_CHECK(B <= std::numeric_limits<int32_t>::max(), "student: at most ",
              std::numeric_limits<int32_t>::max(), " rows on CUDA, got ", B);
}

// Threads per block: a multiple of the warp, no more than the row needs.
int threads_for(int64_t D) {
  const int64_t warps = std::min<int64_t>(kMaxThreads / kWarp, (D + kWarp - 1) / kWarp);
  return static_cast<int>(std::max<int64_t>(warps, 1) * kWarp);
}

template <typename acc_t>
__device__ __forceinline__ acc_t combine(acc_t a, acc_t b, bool is_max) {
  return is_max ? (b > a ? b : a) : a + b;
}

// Reduces v[0..N) over the block (sum, or max when is_max); every thread gets
// the result. `shared` holds N * kWarp values.
template <typename acc_t, int N>
__device__ void block_reduce(acc_t (&v)[N], bool is_max, acc_t* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    for (int k = 0; k < N; ++k) v[k] = combine(v[k], __shfl_down_sync(0xffffffffu, v[k], offset), is_max);
  }
  __syncthreads();  // `shared` may still be read from a previous reduction
  if (lane == 0) {
    for (int k = 0; k < N; ++k) shared[k * kWarp + warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
    // Lanes past the last warp contribute the identity: 0 to a sum, a real value to a max.
    for (int k = 0; k < N; ++k) {
      v[k] = lane < warps ? shared[k * kWarp + lane] : (is_max ? shared[k * kWarp] : acc_t(0));
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      for (int k = 0; k < N; ++k) v[k] = combine(v[k], __shfl_down_sync(0xffffffffu, v[k], offset), is_max);
    }
    if (lane == 0) {
      for (int k = 0; k < N; ++k) shared[k * kWarp] = v[k];
    }
  }
  __syncthreads();
  for (int k = 0; k < N; ++k) v[k] = shared[k * kWarp];
}

template <typename scalar_t, typename acc_t>
__device__ PairRow<acc_t> summarize_row(PairMetric m, const scalar_t* s, const scalar_t* t, int64_t D,
                                        acc_t* shared) {
  acc_t pre[2] = {acc_t(0), acc_t(0)};
  if (pair_needs_pre_pass(m)) {
    const bool is_max = pair_pre_pass_is_max(m);
    if (is_max) {
      // Every thread starts from the first element, so idle threads hold a real value.
      pre[0] = static_cast<acc_t>(s[0]);
      pre[1] = static_cast<acc_t>(t[0]);
    }
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      pre[0] = combine(pre[0], static_cast<acc_t>(s[i]), is_max);
      pre[1] = combine(pre[1], static_cast<acc_t>(t[i]), is_max);
    }
    block_reduce<acc_t, 2>(pre, is_max, shared);
  }
  const acc_t shift_s = m == PairMetric::Pearson ? pre[0] / static_cast<acc_t>(D) : pre[0];
  const acc_t shift_t = m == PairMetric::Pearson ? pre[1] / static_cast<acc_t>(D) : pre[1];
  acc_t sums[kPairSums] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    pair_accumulate<acc_t>(m, static_cast<acc_t>(s[i]), static_cast<acc_t>(t[i]), shift_s, shift_t, sums);
  }
  block_reduce<acc_t, kPairSums>(sums, false, shared);
  return pair_finalize<acc_t>(m, sums, pre[0], pre[1], D);
}

template <typename scalar_t, typename acc_t>
__global__ void pair_distance_kernel(PairMetric m, const scalar_t* __restrict__ student,
                                     const scalar_t* __restrict__ teacher, int64_t D, scalar_t* __restrict__ out) {
  __shared__ acc_t shared[kPairSums * kWarp];
  const int64_t row = blockIdx.x;
  const auto r = summarize_row<scalar_t, acc_t>(m, student + row * D, teacher + row * D, D, shared);
  if (threadIdx.x == 0) out[row] = static_cast<scalar_t>(r.dist);
}

template <typename scalar_t, typename acc_t>
__global__ void pair_distance_backward_kernel(PairMetric m, const scalar_t* __restrict__ grad,
                                              const scalar_t* __restrict__ student,
                                              const scalar_t* __restrict__ teacher, int64_t D,
                                              scalar_t* __restrict__ grad_student,
                                              scalar_t* __restrict__ grad_teacher) {
  __shared__ acc_t shared[kPairSums * kWarp];
  const int64_t row = blockIdx.x;
  const scalar_t* s = student + row * D;
  const scalar_t* t = teacher + row * D;
  const auto r = summarize_row<scalar_t, acc_t>(m, s, t, D, shared);
  const acc_t g = static_cast<acc_t>(grad[row]);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    acc_t ds, dt;
    pair_grad<acc_t>(m, g, static_cast<acc_t>(s[i]), static_cast<acc_t>(t[i]), r, ds, dt);
    grad_student[row * D + i] = static_cast<scalar_t>(ds);
    grad_teacher[row * D + i] = static_cast<scalar_t>(dt);
  }
}

at::Tensor pair_distance_cuda(const at::Tensor& student, const at::Tensor& teacher, c10::string_view metric) {
  const auto m = check_pair_distance_inputs(student, teacher, metric, /*allow_half=*/true);
  const at::cuda::OptionalCUDAGuard guard(student.device());
  const auto s = student.contiguous(), t = teacher.contiguous();
  const int64_t B = s.size(0), D = s.size(1);
  auto result = at::empty({B}, s.options());
  if (B == 0) return result;
  check_grid(B);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "pair_distance_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    pair_distance_kernel<scalar_t, acc_t><<<static_cast<unsigned>(B), threads_for(D), 0, stream>>>(
        m, s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), D, result.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> pair_distance_backward_cuda(const at::Tensor& grad, const at::Tensor& student,
                                                               const at::Tensor& teacher, c10::string_view metric) {
  const auto m = check_pair_distance_backward_inputs(grad, student, teacher, metric, /*allow_half=*/true);
  const at::cuda::OptionalCUDAGuard guard(student.device());
  const auto s = student.contiguous(), t = teacher.contiguous(), g = grad.contiguous();
  const int64_t B = s.size(0), D = s.size(1);
  auto grad_s = at::empty({B, D}, s.options());
  auto grad_t = at::empty({B, D}, s.options());
  if (B == 0) return {grad_s, grad_t};
  check_grid(B);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "pair_distance_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    pair_distance_backward_kernel<scalar_t, acc_t><<<static_cast<unsigned>(B), threads_for(D), 0, stream>>>(
        m, g.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), D,
        grad_s.data_ptr<scalar_t>(), grad_t.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_s, grad_t};
}

// The device guard is in the (device-generic) implementation, after its checks.
at::Tensor gram_distance_cuda(const at::Tensor& student, const at::Tensor& teacher) {
  return gram_distance_impl(student, teacher, /*allow_half=*/true);
}

std::tuple<at::Tensor, at::Tensor> gram_distance_backward_cuda(const at::Tensor& grad, const at::Tensor& student,
                                                               const at::Tensor& teacher) {
  return gram_distance_backward_impl(grad, student, teacher, /*allow_half=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) {
  m.impl("pair_distance", &pair_distance_cuda);
  m.impl("pair_distance_backward", &pair_distance_backward_cuda);
  m.impl("gram_distance", &gram_distance_cuda);
  m.impl("gram_distance_backward", &gram_distance_backward_cuda);
}

}  // namespace fastnas

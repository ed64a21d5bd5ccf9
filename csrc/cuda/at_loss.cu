// at_loss on CUDA. Per pair, forward launches two kernels: one builds both
// attention maps v = mean_c |x|^p [B, HW] (threads over (b, hw), channels
// split over threadIdx.y and summed in shared memory, float accumulation), one
// normalizes each batch row and reduces its squared difference (one block per
// row); the row sums of all pairs are then added by one deterministic sum.
// Backward launches three: the same maps, a row kernel that turns them into
// coef[b, hw] = dL/dv_s / C_s in place, and one pass writing grad_student.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>  // at::acc_type: not reached through the other headers
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "../common/at_loss.h"

namespace fastnas {
namespace {

constexpr int kMapLanes = 32;   // threads over hw in a map block (one warp: coalesced loads)
constexpr int kMapSlices = 8;   // threads over channels in a map block
constexpr int kRowThreads = 256;
constexpr int kGradThreads = 256;

template <typename F>
void with_power(AtPower power, const F& f) {
  switch (power) {
    case AtPower::Two: f(std::integral_constant<AtPower, AtPower::Two>()); break;
    case AtPower::One: f(std::integral_constant<AtPower, AtPower::One>()); break;
    default: f(std::integral_constant<AtPower, AtPower::General>()); break;
  }
}

// sum over channels of |x[b, c, j]|^p for this thread's slice of the channels.
template <AtPower kPower, typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t channel_partial(const scalar_t* __restrict__ x, int64_t b, int64_t j,
                                                 int64_t channels, int64_t hw, acc_t p) {
  acc_t sum = 0;
  const scalar_t* base = x + b * channels * hw + j;
  for (int64_t c = threadIdx.y; c < channels; c += kMapSlices) {
    sum += at_abs_pow<kPower, acc_t>(static_cast<acc_t>(base[c * hw]), p);
  }
  return sum;
}

// vs[r], vt[r] = mean_c |x[b, c, j]|^p of student and teacher for r = b * hw + j.
template <AtPower kPower, typename scalar_t, typename acc_t>
__global__ void maps_kernel(const scalar_t* __restrict__ s, const scalar_t* __restrict__ t, int64_t rows,
                            int64_t hw, int64_t cs, int64_t ct, acc_t p, acc_t* __restrict__ vs,
                            acc_t* __restrict__ vt) {
  __shared__ acc_t partial[2][kMapSlices][kMapLanes];
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kMapLanes + threadIdx.x;
  acc_t sum_s = 0, sum_t = 0;
  if (r < rows) {
    const int64_t b = r / hw, j = r - b * hw;
    sum_s = channel_partial<kPower>(s, b, j, cs, hw, p);
    sum_t = channel_partial<kPower>(t, b, j, ct, hw, p);
  }
  partial[0][threadIdx.y][threadIdx.x] = sum_s;
  partial[1][threadIdx.y][threadIdx.x] = sum_t;
  __syncthreads();
  if (threadIdx.y == 0 && r < rows) {
    for (int y = 1; y < kMapSlices; ++y) {
      sum_s += partial[0][y][threadIdx.x];
      sum_t += partial[1][y][threadIdx.x];
    }
    // A division, as torch's mean; with no channels 0 / 0 gives its NaN.
    vs[r] = sum_s / static_cast<acc_t>(cs);
    vt[r] = sum_t / static_cast<acc_t>(ct);
  }
}

// Sum of `value` over the block, returned to every thread (fixed order:
// deterministic). `shared` holds one entry per warp.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call may still be reading shared[0]
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    if (lane == 0) shared[0] = value;
  }
  __syncthreads();
  return shared[0];
}

// Row norms ||v_s[b]||, ||v_t[b]|| of the block's row b.
template <typename acc_t>
__device__ void row_norms(const acc_t* vs, const acc_t* vt, int64_t hw, acc_t* shared, acc_t& norm_s,
                          acc_t& norm_t) {
  acc_t squares_s = 0, squares_t = 0;
  for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) {
    squares_s += vs[j] * vs[j];
    squares_t += vt[j] * vt[j];
  }
  norm_s = ::sqrt(block_sum(squares_s, shared));
  norm_t = ::sqrt(block_sum(squares_t, shared));
}

// row_loss[b] = sum_hw (a_s - a_t)^2 / (B HW) for the block's row b.
template <typename acc_t>
__global__ void loss_rows_kernel(const acc_t* __restrict__ vs, const acc_t* __restrict__ vt, int64_t hw,
                                 acc_t inv_count, acc_t* __restrict__ row_loss) {
  __shared__ acc_t shared[32];
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * hw;
  vs += offset;
  vt += offset;
  acc_t norm_s, norm_t;
  row_norms(vs, vt, hw, shared, norm_s, norm_t);
  const acc_t den_s = at_norm_floor(norm_s), den_t = at_norm_floor(norm_t);
  acc_t squares = 0;
  for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) {
    const acc_t diff = vs[j] / den_s - vt[j] / den_t;
    squares += diff * diff;
  }
  squares = block_sum(squares, shared);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = squares * inv_count;
}

// In place: vs[b, j] becomes coef = dL/dv_s[b, j] / C_s, with g = dL/da_s =
// 2 (a_s - a_t) grad / (B HW) and the normalize Jacobian of at_normalize_grad.
template <typename scalar_t, typename acc_t>
__global__ void coef_rows_kernel(acc_t* __restrict__ vs, const acc_t* __restrict__ vt, int64_t hw,
                                 const scalar_t* __restrict__ grad, acc_t two_inv_count, acc_t inv_channels) {
  __shared__ acc_t shared[32];
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * hw;
  vs += offset;
  vt += offset;
  acc_t norm_s, norm_t;
  row_norms(vs, vt, hw, shared, norm_s, norm_t);
  const acc_t den_s = at_norm_floor(norm_s), den_t = at_norm_floor(norm_t);
  const acc_t scale = two_inv_count * static_cast<acc_t>(*grad);
  acc_t n_dot_g = 0;
  for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) {
    const acc_t a_s = vs[j] / den_s;
    n_dot_g += a_s * scale * (a_s - vt[j] / den_t);
  }
  n_dot_g = block_sum(n_dot_g, shared);
  // Each thread rewrites only the entries it read, after every read of the row.
  for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) {
    const acc_t a_s = vs[j] / den_s;
    const acc_t g = scale * (a_s - vt[j] / den_t);
    vs[j] = at_normalize_grad(g, a_s, n_dot_g, norm_s) * inv_channels;
  }
}

// grad_s[b, c, j] = coef[b, j] d|s|^p/ds.
template <AtPower kPower, typename scalar_t, typename acc_t>
__global__ void grad_student_kernel(const scalar_t* __restrict__ s, const acc_t* __restrict__ coef, int64_t numel,
                                    int64_t hw, int64_t channels, acc_t p, scalar_t* __restrict__ grad_s) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const int64_t j = i % hw, b = i / (channels * hw);
    grad_s[i] = static_cast<scalar_t>(coef[b * hw + j] * at_abs_pow_grad<kPower, acc_t>(static_cast<acc_t>(s[i]), p));
  }
}

at::ScalarType acc_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// Launches maps_kernel for one pair into a fresh [2, B * HW] buffer.
at::Tensor pair_maps(const at::Tensor& s, const at::Tensor& t, const AtPairShape& shape, AtPower power, double p) {
  auto maps = at::empty({2, shape.rows()}, s.options().dtype(acc_dtype(s.scalar_type())));
  const auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kMapLanes, kMapSlices);
  const auto blocks = static_cast<unsigned>((shape.rows() + kMapLanes - 1) / kMapLanes);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "at_loss_maps_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    with_power(power, [&](auto kind) {
      maps_kernel<decltype(kind)::value, scalar_t, acc_t><<<blocks, block, 0, stream>>>(
          s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), shape.rows(), shape.spatial, shape.student_channels,
          shape.teacher_channels, static_cast<acc_t>(p), maps.data_ptr<acc_t>(),
          maps.data_ptr<acc_t>() + shape.rows());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return maps;
}

at::Tensor at_loss_cuda(at::TensorList student, at::TensorList teacher, double p) {
  const auto plan = check_at_loss_inputs(student, teacher, p, /*allow_half=*/true);
  const at::cuda::OptionalCUDAGuard guard(student[0].device());
  const auto options = student[0].options();
  int64_t total_rows = 0;
  for (const auto& shape : plan.pairs) {
    // The mean over an empty pair is NaN (as torch's), and so is the sum.
    if (shape.rows() == 0) return at::full({}, std::numeric_limits<double>::quiet_NaN(), options);
    total_rows += shape.batch;
  }
  auto row_loss = at::empty({total_rows}, options.dtype(acc_dtype(student[0].scalar_type())));
  const auto stream = at::cuda::getCurrentCUDAStream();
  int64_t first_row = 0;
  for (size_t i = 0; i < plan.pairs.size(); ++i) {
    const auto& shape = plan.pairs[i];
    const auto maps = pair_maps(student[i].contiguous(), teacher[i].contiguous(), shape, plan.power, p);
    AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "at_loss_rows_cuda", [&] {
      loss_rows_kernel<scalar_t><<<static_cast<unsigned>(shape.batch), kRowThreads, 0, stream>>>(
          maps.data_ptr<scalar_t>(), maps.data_ptr<scalar_t>() + shape.rows(), shape.spatial,
          static_cast<scalar_t>(1.0 / static_cast<double>(shape.rows())), row_loss.data_ptr<scalar_t>() + first_row);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    first_row += shape.batch;
  }
  return row_loss.sum().to(options.dtype());
}

std::vector<at::Tensor> at_loss_backward_cuda(const at::Tensor& grad, at::TensorList student, at::TensorList teacher,
                                              double p) {
  const auto plan = check_at_loss_inputs(student, teacher, p, /*allow_half=*/true);
  check_at_loss_grad(grad, student);
  const at::cuda::OptionalCUDAGuard guard(student[0].device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto grad_c = grad.contiguous();
  const int max_blocks = at::cuda::getCurrentDeviceProperties()->multiProcessorCount * 32;
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < plan.pairs.size(); ++i) {
    const auto& shape = plan.pairs[i];
    const auto s = student[i].contiguous();
    auto grad_s = at::empty(s.sizes(), s.options());
    grads.push_back(grad_s);
    if (s.numel() == 0) continue;  // also covers an empty pair: its maps are empty
    auto maps = pair_maps(s, teacher[i].contiguous(), shape, plan.power, p);
    const int64_t numel = s.numel();
    const auto grad_blocks = static_cast<unsigned>(
        std::min<int64_t>((numel + kGradThreads - 1) / kGradThreads, max_blocks));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "at_loss_backward_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      acc_t* vs = maps.data_ptr<acc_t>();
      coef_rows_kernel<scalar_t, acc_t><<<static_cast<unsigned>(shape.batch), kRowThreads, 0, stream>>>(
          vs, vs + shape.rows(), shape.spatial, grad_c.data_ptr<scalar_t>(),
          static_cast<acc_t>(2.0 / static_cast<double>(shape.rows())),
          static_cast<acc_t>(1.0 / static_cast<double>(shape.student_channels)));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      with_power(plan.power, [&](auto kind) {
        grad_student_kernel<decltype(kind)::value, scalar_t, acc_t><<<grad_blocks, kGradThreads, 0, stream>>>(
            s.data_ptr<scalar_t>(), vs, numel, shape.spatial, shape.student_channels, static_cast<acc_t>(p),
            grad_s.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) {
  m.impl("at_loss", &at_loss_cuda);
  m.impl("at_loss_backward", &at_loss_backward_cuda);
}

}  // namespace fastnas

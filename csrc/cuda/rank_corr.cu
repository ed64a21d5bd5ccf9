// rank_corr on CUDA.
// Spearman: one batched at::sort of the rows; a kernel gives every element its
// (centered, doubled) average rank by binary search of its tie group in the
// sorted row and scatters it back through the sort indices; one block per row
// then sums the exact integer rank products in double.
// Kendall: O(N^2) pair counting without any N x N buffer: blocks over (tile of
// i, row), each thread holds one i and walks every j > i through shared-memory
// chunks, counting concordant-minus-discordant and untied pairs in 64-bit
// integers (one atomicAdd per block and counter); a small kernel finishes tau-b.
// Values are compared in at::acc_type (exact for half/bfloat16); NaN is checked
// explicitly since comparisons would silently treat it as a tie.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/rank_corr.h"

namespace fastnas {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // also the Kendall tile of i and of j
constexpr int64_t kMaxGridY = 65535;

// Sums K values over the block; the result is valid in thread 0. `shared` holds
// K * kWarp values. Every thread of the block must call it.
template <typename T, int K>
__device__ void block_sum(T (&v)[K], T* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int k = 0; k < K; ++k) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v[k] += __shfl_down_sync(0xffffffffu, v[k], offset);
  }
  if (lane == 0) {
    for (int k = 0; k < K; ++k) shared[k * kWarp + warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + kWarp - 1) / kWarp;
    for (int k = 0; k < K; ++k) {
      v[k] = lane < warps ? shared[k * kWarp + lane] : T(0);
      for (int offset = kWarp / 2; offset > 0; offset /= 2) v[k] += __shfl_down_sync(0xffffffffu, v[k], offset);
    }
  }
  __syncthreads();  // `shared` may be reused right after
}

// ranks[row, order[row, k]] = centered doubled average rank of sorted[row, k].
// The tie group of position k is [first, last): first by binary search in
// [0, k], last in [k + 1, n]. NaN rows get meaningless ranks, masked later.
template <typename scalar_t>
__global__ void centered_ranks_kernel(const scalar_t* __restrict__ sorted, const int64_t* __restrict__ order,
                                      int64_t rows, int64_t n, int32_t* __restrict__ ranks) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t total = rows * n;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / n, k = e - row * n;
    const scalar_t* s = sorted + row * n;
    const acc_t v = static_cast<acc_t>(s[k]);
    int64_t lo = 0, hi = k;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<acc_t>(s[mid]) < v) lo = mid + 1; else hi = mid;
    }
    const int64_t first = lo;
    lo = k + 1;
    hi = n;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<acc_t>(s[mid]) > v) hi = mid; else lo = mid + 1;
    }
    ranks[row * n + order[e]] = static_cast<int32_t>(centered_rank2(first, lo, n));
  }
}

// One block per row: Pearson correlation of the centered ranks with the target's.
template <typename scalar_t>
__global__ void spearman_rows_kernel(const scalar_t* __restrict__ scores, const scalar_t* __restrict__ target,
                                     const int32_t* __restrict__ ranks, const int32_t* __restrict__ target_ranks,
                                     int64_t n, scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ double shared[4 * kWarp];
  const int64_t row = blockIdx.x;
  // sxy, sxx, syy (exact integers in double up to N ~ 2e5) and the NaN count.
  double v[4] = {0, 0, 0, 0};
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const acc_t x = static_cast<acc_t>(scores[row * n + j]), y = static_cast<acc_t>(target[j]);
    const double cx = ranks[row * n + j], cy = target_ranks[j];
    v[0] += cx * cy;
    v[1] += cx * cx;
    v[2] += cy * cy;
    v[3] += (x != x || y != y) ? 1.0 : 0.0;
  }
  block_sum(v, shared);
  if (threadIdx.x == 0) {
    const double r = v[3] > 0 ? rank_corr_nan() : pearson_from_sums(v[0], v[1], v[2]);
    out[row] = static_cast<scalar_t>(static_cast<acc_t>(r));
  }
}

// counts[row] += (concordant - discordant, pairs untied in x, pairs untied in y,
// NaN values) over the pairs (i, j > i) with i in this block's tile.
template <typename scalar_t>
__global__ void kendall_pairs_kernel(const scalar_t* __restrict__ scores, const scalar_t* __restrict__ target,
                                     int64_t rows, int64_t n, unsigned long long* __restrict__ counts) {
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ acc_t chunk_x[kThreads];
  __shared__ acc_t chunk_y[kThreads];
  __shared__ long long shared[4 * kWarp];
  const int64_t tile_start = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int64_t i = tile_start + threadIdx.x;
  const bool has_i = i < n;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const scalar_t* x = scores + row * n;
    acc_t xi = 0, yi = 0;
    if (has_i) {
      xi = static_cast<acc_t>(x[i]);
      yi = static_cast<acc_t>(target[i]);
    }
    // Per-thread counts stay below n < 2^31; block totals need 64 bits.
    int con_minus_dis = 0, untied_x = 0, untied_y = 0;
    for (int64_t start = tile_start; start < n; start += kThreads) {
      const int64_t j = start + threadIdx.x;
      __syncthreads();  // the previous chunk has been read by every thread
      if (j < n) {
        chunk_x[threadIdx.x] = static_cast<acc_t>(x[j]);
        chunk_y[threadIdx.x] = static_cast<acc_t>(target[j]);
      }
      __syncthreads();
      if (has_i) {
        const int count = static_cast<int>(n - start < kThreads ? n - start : kThreads);
        // In the diagonal chunk only j > i; later chunks hold only j > i.
        for (int jj = start == tile_start ? threadIdx.x + 1 : 0; jj < count; ++jj) {
          const int dx = (xi > chunk_x[jj]) - (xi < chunk_x[jj]);
          const int dy = (yi > chunk_y[jj]) - (yi < chunk_y[jj]);
          con_minus_dis += dx * dy;
          untied_x += dx != 0;
          untied_y += dy != 0;
        }
      }
    }
    long long v[4] = {con_minus_dis, untied_x, untied_y, has_i && (xi != xi || yi != yi) ? 1 : 0};
    block_sum(v, shared);
    if (threadIdx.x == 0) {
      // Two's complement: adding a negative count as unsigned wraps to the right total.
      for (int k = 0; k < 4; ++k) atomicAdd(counts + row * 4 + k, static_cast<unsigned long long>(v[k]));
    }
  }
}

template <typename scalar_t>
__global__ void kendall_finalize_kernel(const unsigned long long* __restrict__ counts, int64_t rows,
                                        scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long* c = counts + row * 4;
    const double tau = c[3] > 0 ? rank_corr_nan()
                                : kendall_tau_b(static_cast<double>(static_cast<long long>(c[0])),
                                                static_cast<double>(c[1]), static_cast<double>(c[2]));
    out[row] = static_cast<scalar_t>(static_cast<acc_t>(tau));
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks, cap)));
}

at::Tensor rank_corr_cuda(const at::Tensor& scores, const at::Tensor& target, c10::string_view method) {
  const auto parsed = check_rank_corr_inputs(scores, target, method, /*allow_half=*/true);
  const c10::cuda::OptionalCUDAGuard guard(scores.device());
  const int64_t rows = scores.size(0), n = scores.size(1);
  if (rows == 0) return at::empty({0}, scores.options());
  // No pair to rank: NaN, as scipy gives.
  if (n < 2) return at::full({rows}, rank_corr_nan(), scores.options());
  const auto scores_c = scores.contiguous();
  const auto target_c = target.contiguous();
  auto result = at::empty({rows}, scores.options());
  const auto stream = at::cuda::getCurrentCUDAStream();

  if (parsed == RankCorrMethod::Spearman) {
    const auto row_sort = at::sort(scores_c, /*dim=*/1);
    const auto target_sort = at::sort(target_c, /*dim=*/0);
    const auto int_options = scores.options().dtype(at::kInt);
    auto ranks = at::empty({rows, n}, int_options);
    auto target_ranks = at::empty({n}, int_options);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "rank_corr_spearman_cuda", [&] {
      const auto& sorted_rows = std::get<0>(row_sort);
      const auto& sorted_target = std::get<0>(target_sort);
      centered_ranks_kernel<scalar_t><<<grid_for(rows * n, kThreads), kThreads, 0, stream>>>(
          sorted_rows.data_ptr<scalar_t>(), std::get<1>(row_sort).data_ptr<int64_t>(), rows, n,
          ranks.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      centered_ranks_kernel<scalar_t><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
          sorted_target.data_ptr<scalar_t>(), std::get<1>(target_sort).data_ptr<int64_t>(), 1, n,
          target_ranks.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      spearman_rows_kernel<scalar_t><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
          scores_c.data_ptr<scalar_t>(), target_c.data_ptr<scalar_t>(), ranks.data_ptr<int32_t>(),
          target_ranks.data_ptr<int32_t>(), n, result.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return result;
  }

  auto counts = at::zeros({rows, 4}, scores.options().dtype(at::kLong));
  auto* counts_ptr = reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>());
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min(rows, kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "rank_corr_kendall_cuda", [&] {
    kendall_pairs_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(scores_c.data_ptr<scalar_t>(),
                                                                   target_c.data_ptr<scalar_t>(), rows, n, counts_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    kendall_finalize_kernel<scalar_t><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(counts_ptr, rows,
                                                                                          result.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CUDA, m) { m.impl("rank_corr", &rank_corr_cuda); }

}  // namespace fastnas

// rank_corr on the CPU: rows in parallel, O(N log N) per row.
// Kendall: Knight's algorithm as in scipy.stats.kendalltau (order the pairs by
// one variable, ties by the other, count ties, count discordant pairs as the
// merge-sort inversions of the other variable).
// Spearman: average ranks from one sort of the row, correlated with the
// target's ranks (computed once) as exact integer sums in double.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <utility>
#include <vector>

#include "../common/rank_corr.h"

namespace fastnas {
namespace {

template <typename scalar_t>
bool any_nan(const scalar_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return true;
  }
  return false;
}

// Positions 0..n-1 ordered by value (x holds no NaN, so the order is strict weak).
template <typename scalar_t>
std::vector<int32_t> argsort(const scalar_t* x, int64_t n) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [x](int32_t a, int32_t b) { return x[a] < x[b]; });
  return order;
}

// Calls visit(first, last) for every run of equal values in sorted order.
template <typename Equal, typename Visit>
void for_each_tie_group(int64_t n, Equal equal, Visit visit) {
  for (int64_t first = 0; first < n;) {
    int64_t last = first + 1;
    while (last < n && equal(first, last)) ++last;
    visit(first, last);
    first = last;
  }
}

int64_t pairs_of(int64_t count) { return count * (count - 1) / 2; }

// Sorts v ascending (in v or in scratch: the returned pointer) and counts the
// pairs i < j with v[i] > v[j]: insertion sort on short runs, then bottom-up
// merges that count how far each element of a second half jumps.
template <typename T>
const T* sort_counting_inversions(T* v, T* scratch, int64_t n, int64_t* inversions) {
  constexpr int64_t kRun = 16;
  int64_t count = 0;
  for (int64_t lo = 0; lo < n; lo += kRun) {
    const int64_t hi = std::min(n, lo + kRun);
    for (int64_t i = lo + 1; i < hi; ++i) {
      const T value = v[i];
      int64_t k = i;
      while (k > lo && v[k - 1] > value) {
        v[k] = v[k - 1];
        --k;
      }
      count += i - k;
      v[k] = value;
    }
  }
  T* src = v;
  T* dst = scratch;
  for (int64_t width = kRun; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      const int64_t mid = std::min(n, lo + width), hi = std::min(n, lo + 2 * width);
      int64_t a = lo, b = mid, out = lo;
      while (a < mid && b < hi) {
        if (src[b] < src[a]) {
          count += mid - a;  // src[b] jumps over every element left in the first half
          dst[out++] = src[b++];
        } else {
          dst[out++] = src[a++];
        }
      }
      while (a < mid) dst[out++] = src[a++];
      while (b < hi) dst[out++] = src[b++];
    }
    std::swap(src, dst);
  }
  *inversions = count;
  return src;
}

// Rows per parallel task: enough that a task holds ~GRAIN_SIZE elements.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(n, 1)); }

// Knight's algorithm with the roles of x and y swapped so that the target's sort
// is done once: walk x in target order (ties in the target ordered by x), then
// the discordant pairs are exactly the inversions of that sequence.
template <typename scalar_t>
void kendall_rows(const scalar_t* scores, const scalar_t* target, int64_t rows, int64_t n, double* out) {
  const auto order = argsort(target, n);
  std::vector<std::pair<int64_t, int64_t>> target_groups;  // tie groups of 2+ in sorted order
  int64_t y_ties = 0;
  for_each_tie_group(
      n, [&](int64_t a, int64_t b) { return target[order[a]] == target[order[b]]; },
      [&](int64_t first, int64_t last) {
        if (last - first > 1) target_groups.emplace_back(first, last);
        y_ties += pairs_of(last - first);
      });
  const int64_t total = pairs_of(n);

  at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> xs(n), scratch(n);
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* x = scores + row * n;
      if (any_nan(x, n)) {
        out[row] = rank_corr_nan();
        continue;
      }
      for (int64_t k = 0; k < n; ++k) xs[k] = x[order[k]];
      // Within a target tie, x ascending: such a pair is then never an inversion,
      // and its pairs tied in x too (joint ties) are neighbours.
      int64_t joint_ties = 0;
      for (const auto& group : target_groups) {
        std::sort(xs.begin() + group.first, xs.begin() + group.second);
        for_each_tie_group(
            group.second - group.first,
            [&](int64_t a, int64_t b) { return xs[group.first + a] == xs[group.first + b]; },
            [&](int64_t first, int64_t last) { joint_ties += pairs_of(last - first); });
      }
      int64_t discordant = 0;
      const scalar_t* sorted = sort_counting_inversions(xs.data(), scratch.data(), n, &discordant);
      int64_t x_ties = 0;
      for_each_tie_group(
          n, [&](int64_t a, int64_t b) { return sorted[a] == sorted[b]; },
          [&](int64_t first, int64_t last) { x_ties += pairs_of(last - first); });
      // Every pair is concordant, discordant, tied in x only, in y only, or in both.
      const int64_t con_minus_dis = total - x_ties - y_ties + joint_ties - 2 * discordant;
      out[row] = kendall_tau_b(static_cast<double>(con_minus_dis), static_cast<double>(total - x_ties),
                               static_cast<double>(total - y_ties));
    }
  });
}

template <typename scalar_t>
void spearman_rows(const scalar_t* scores, const scalar_t* target, int64_t rows, int64_t n, double* out) {
  // Centered, doubled average ranks of the target (exact integers) and their sum of squares.
  std::vector<double> target_rank(n);
  double syy = 0;
  {
    const auto order = argsort(target, n);
    for_each_tie_group(
        n, [&](int64_t a, int64_t b) { return target[order[a]] == target[order[b]]; },
        [&](int64_t first, int64_t last) {
          const auto c = static_cast<double>(centered_rank2(first, last, n));
          for (int64_t k = first; k < last; ++k) target_rank[order[k]] = c;
          syy += c * c * static_cast<double>(last - first);
        });
  }

  struct Entry {
    scalar_t x;
    int32_t index;
  };
  at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<Entry> entries(n);
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* x = scores + row * n;
      if (any_nan(x, n)) {
        out[row] = rank_corr_nan();
        continue;
      }
      for (int64_t j = 0; j < n; ++j) entries[j] = {x[j], static_cast<int32_t>(j)};
      std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.x < b.x; });
      double sxy = 0, sxx = 0;
      for_each_tie_group(
          n, [&](int64_t a, int64_t b) { return entries[a].x == entries[b].x; },
          [&](int64_t first, int64_t last) {
            const auto c = static_cast<double>(centered_rank2(first, last, n));
            double group_y = 0;
            for (int64_t k = first; k < last; ++k) group_y += target_rank[entries[k].index];
            sxy += c * group_y;
            sxx += c * c * static_cast<double>(last - first);
          });
      out[row] = pearson_from_sums(sxy, sxx, syy);
    }
  });
}

at::Tensor rank_corr_cpu(const at::Tensor& scores, const at::Tensor& target, c10::string_view method) {
  const auto parsed = check_rank_corr_inputs(scores, target, method, /*allow_half=*/false);
  const int64_t rows = scores.size(0), n = scores.size(1);
  auto result = at::empty({rows}, scores.options().dtype(at::kDouble));
  if (rows == 0) return result.to(scores.scalar_type());
  const auto scores_c = scores.contiguous();
  const auto target_c = target.contiguous();
  double* out = result.data_ptr<double>();

  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "rank_corr_cpu", [&] {
    const scalar_t* s = scores_c.data_ptr<scalar_t>();
    const scalar_t* t = target_c.data_ptr<scalar_t>();
    if (n < 2 || any_nan(t, n)) {
      // No pair to rank (scipy gives NaN), or a NaN target: every row is NaN.
      result.fill_(rank_corr_nan());
    } else if (parsed == RankCorrMethod::Kendall) {
      kendall_rows<scalar_t>(s, t, rows, n, out);
    } else {
      spearman_rows<scalar_t>(s, t, rows, n, out);
    }
  });
  return result.to(scores.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnas, CPU, m) { m.impl("rank_corr", &rank_corr_cpu); }

}  // namespace fastnas

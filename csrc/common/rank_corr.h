// rank_corr: argument checks and the final formulas shared by the CPU and CUDA
// kernels. Every row of scores [P, N] is correlated with target [N]:
//   kendall  = Kendall tau-b (scipy.stats.kendalltau),
//   spearman = Pearson correlation of average ranks (scipy.stats.spearmanr).
// Both kernels reduce a row to a few exact counts or integer sums, kept in
// 64-bit integers or doubles, and finish with the functions below.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "checks.h"

namespace fastnas {

enum class RankCorrMethod { Kendall = 0, Spearman = 1 };
constexpr std::array<const char*, 2> kRankCorrMethods = {"kendall", "spearman"};

// Validates every argument of rank_corr and returns the parsed method.
inline RankCorrMethod check_rank_corr_inputs(const at::Tensor& scores, const at::Tensor& target,
                                             c10::string_view method, bool allow_half) {
  const auto parsed = parse_option<RankCorrMethod>(method, "method", kRankCorrMethods);
  check_dim(scores, "scores", 2, "[P, N] (one row per candidate; use scores[None] for one row)");
  check_dim(target, "target", 1, "[N]");
  check_floating(scores, "scores", allow_half);
  check_same_dtype(target, "target", scores, "scores");
  check_same_device(target, "target", scores, "scores");
  TORCH_CHECK(target.size(0) == scores.size(1), "target: expected ", scores.size(1),
              " values (N = scores.size(1)), got ", target.size(0));
  // Positions and tie-group bounds are kept in 32-bit integers.
  TORCH_CHECK(scores.size(1) < std::numeric_limits<int32_t>::max(), "scores: expected N < 2^31 - 1, got ",
              scores.size(1));
  return parsed;
}

FASTNAS_HOST_DEVICE double rank_corr_nan() { return std::numeric_limits<double>::quiet_NaN(); }

FASTNAS_HOST_DEVICE double clip_unit(double r) { return r > 1.0 ? 1.0 : (r < -1.0 ? -1.0 : r); }

// Kendall tau-b from pair counts over the N (N - 1) / 2 unordered pairs:
// (concordant - discordant) / sqrt(pairs untied in x) / sqrt(pairs untied in y),
// clipped to [-1, 1] and NaN when either side has no untied pair, as scipy does.
FASTNAS_HOST_DEVICE double kendall_tau_b(double con_minus_dis, double untied_x, double untied_y) {
  if (!(untied_x > 0 && untied_y > 0)) return rank_corr_nan();
  return clip_unit(con_minus_dis / ::sqrt(untied_x) / ::sqrt(untied_y));
}

// The centered, doubled average rank of a tie group at sorted positions [first, last):
// 2 * ((first + 1 + last) / 2 - (N + 1) / 2) = first + last - N, an exact integer.
// The mean of average ranks is (N + 1) / 2 with or without ties.
FASTNAS_HOST_DEVICE int64_t centered_rank2(int64_t first, int64_t last, int64_t n) { return first + last - n; }

// Spearman rho as the Pearson correlation of centered (doubled) ranks from the
// sums sxy, sxx, syy; the doubling cancels. NaN for a constant row or target.
FASTNAS_HOST_DEVICE double pearson_from_sums(double sxy, double sxx, double syy) {
  if (!(sxx > 0 && syy > 0)) return rank_corr_nan();
  return clip_unit(sxy / ::sqrt(sxx * syy));
}

}  // namespace fastnas

// mixed_node: argument checks and the weight math shared by the CPU and CUDA
// kernels. A node has E incoming edges and K candidate operators per edge;
// `mask` [E, K] says which (edge, op) pairs are live, and `outs` holds exactly
// the live outputs in row-major order of `mask`.
#pragma once

#include <cmath>
#include <vector>

#include "checks.h"

namespace fastnas {

enum class MixedNodeMode { Softmax = 0, Sigmoid = 1, ReluNorm = 2, Identity = 3 };
constexpr std::array<const char*, 4> kMixedNodeModes = {"softmax", "sigmoid", "relu_norm", "identity"};

// Kernel launch arguments hold one pointer per live operator; 128 covers the
// densest DARTS node (5 edges x 8 ops = 40) with room to spare.
constexpr int kMaxLiveOps = 128;

struct MixedNodePlan {
  MixedNodeMode mode;
  double inv_temperature;
  std::vector<int32_t> live_index;  // flat index e * K + k of each live op, row-major
  std::vector<int32_t> live_edge;   // its edge e
  int64_t num_live() const { return static_cast<int64_t>(live_index.size()); }
};

// Validates every argument of mixed_node and reads the live structure of `mask`
// on the host (a device mask costs one synchronization: keep it on the CPU).
inline MixedNodePlan check_mixed_node_inputs(at::TensorList outs, const at::Tensor& alpha,
                                             const at::Tensor& mask, c10::string_view mode,
                                             double temperature, bool allow_half) {
  MixedNodePlan plan;
  plan.mode = parse_option<MixedNodeMode>(mode, "mode", kMixedNodeModes);
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0,
              "temperature: expected a positive finite number, got ", temperature);
  plan.inv_temperature = 1.0 / temperature;
  check_dim(alpha, "alpha", 2, "[edges, ops]");
  check_floating(alpha, "alpha", allow_half);
  TORCH_CHECK(mask.scalar_type() == at::kBool, "mask: expected a bool tensor, got ", mask.scalar_type());
  check_same_shape(mask, "mask", alpha, "alpha");
  TORCH_CHECK(mask.device().is_cpu() || mask.device() == alpha.device(),
              "mask: expected a tensor on the CPU or on ", alpha.device(), " like alpha, got one on ",
              mask.device());

  const auto host_mask = mask.to(at::kCPU).contiguous();
  const bool* live = host_mask.data_ptr<bool>();
  const int64_t ops = alpha.size(1);
  for (int64_t i = 0; i < host_mask.numel(); ++i) {
    if (live[i]) {
      plan.live_index.push_back(static_cast<int32_t>(i));
      plan.live_edge.push_back(static_cast<int32_t>(i / ops));
    }
  }
  TORCH_CHECK(static_cast<int64_t>(outs.size()) == plan.num_live(), "outs: expected one tensor per live ",
              "operator, mask.sum() = ", plan.num_live(), ", got ", outs.size());
  TORCH_CHECK(plan.num_live() > 0, "mask: a node needs at least one live operator (a fully pruned node ",
              "has no output shape; use zeros for it)");
  TORCH_CHECK(plan.num_live() <= kMaxLiveOps, "mask: at most ", kMaxLiveOps, " live operators per node, got ",
              plan.num_live());
  for (size_t i = 0; i < outs.size(); ++i) {
    check_floating(outs[i], indexed("outs", i), allow_half);
    check_same_device(outs[i], indexed("outs", i), alpha, "alpha");
    check_same_dtype(outs[i], indexed("outs", i), outs[0], "outs[0]");
    check_same_shape(outs[i], indexed("outs", i), outs[0], "outs[0]");
  }
  return plan;
}

// mixed_node_backward: the forward's checks plus the incoming gradient's.
inline MixedNodePlan check_mixed_node_backward_inputs(const at::Tensor& grad, at::TensorList outs,
                                                      const at::Tensor& alpha, const at::Tensor& mask,
                                                      c10::string_view mode, double temperature, bool allow_half) {
  auto plan = check_mixed_node_inputs(outs, alpha, mask, mode, temperature, allow_half);
  check_same_shape(grad, "grad", outs[0], "outs[0]");
  check_same_dtype(grad, "grad", outs[0], "outs[0]");
  check_same_device(grad, "grad", outs[0], "outs[0]");
  return plan;
}

// chunk_sum: a node's value from grouped operator outputs. outs[t] is [B, chunks[t] * C, *rest], its
// chunk j (channels j * C .. (j + 1) * C) weighed by weights[s], s counting the chunks term after term.
// A slot is one chunk: where it starts in outs[t] (offset j * D) and the step between its batch rows
// (chunks[t] * D), D = C * prod(rest) being the size of one row of the result.
struct ChunkSumPlan {
  std::vector<int64_t> term;          // outs index of each slot
  std::vector<int64_t> offset;        // its first element in that tensor
  std::vector<int64_t> batch_stride;  // elements between its batch rows there
  std::vector<int64_t> result_sizes;  // [B, C, *rest]
  int64_t batch = 0, row = 0;         // B and D
  int64_t num_slots() const { return static_cast<int64_t>(term.size()); }
};

inline ChunkSumPlan check_chunk_sum_inputs(at::TensorList outs, const at::Tensor& weights, at::IntArrayRef chunks,
                                           bool allow_half) {
  TORCH_CHECK(!outs.empty(), "outs: expected at least one tensor, got an empty list");
  TORCH_CHECK(chunks.size() == outs.size(), "chunks: expected one count per tensor of outs (", outs.size(),
              "), got ", chunks.size());
  check_dim(weights, "weights", 1, "[chunks]");
  check_floating(weights, "weights", allow_half);
  check_same_device(weights, "weights", outs[0], "outs[0]");
  ChunkSumPlan plan;
  for (size_t t = 0; t < outs.size(); ++t) {
    const auto& out = outs[t];
    const auto name = indexed("outs", t);
    TORCH_CHECK(chunks[t] >= 1, indexed("chunks", t), ": expected a count >= 1, got ", chunks[t]);
    TORCH_CHECK(out.dim() >= 2, name, ": expected a tensor [B, chunks * C, ...], got shape ", out.sizes());
    check_floating(out, name, allow_half);
    check_same_device(out, name, outs[0], "outs[0]");
    check_same_dtype(out, name, outs[0], "outs[0]");
    TORCH_CHECK(out.size(1) % chunks[t] == 0, name, ": expected channels divisible by chunks[", t, "] = ",
                chunks[t], ", got shape ", out.sizes());
    auto sizes = out.sizes().vec();
    sizes[1] /= chunks[t];
    if (t == 0) {
      plan.result_sizes = sizes;
      plan.batch = sizes[0];
      plan.row = plan.batch == 0 ? 0 : c10::multiply_integers(sizes) / plan.batch;
    }
    TORCH_CHECK(sizes == plan.result_sizes, name, ": expected ", chunks[t], " chunks of shape ",
                at::IntArrayRef(plan.result_sizes), " like outs[0]'s, got shape ", out.sizes());
    for (int64_t j = 0; j < chunks[t]; ++j) {
      plan.term.push_back(static_cast<int64_t>(t));
      plan.offset.push_back(j * plan.row);
      plan.batch_stride.push_back(chunks[t] * plan.row);
    }
  }
  TORCH_CHECK(weights.numel() == plan.num_slots(), "weights: expected one weight per chunk, sum(chunks) = ",
              plan.num_slots(), ", got ", weights.numel());
  TORCH_CHECK(plan.num_slots() <= kMaxLiveOps, "chunks: at most ", kMaxLiveOps, " chunks in all, got ",
              plan.num_slots());
  return plan;
}

inline ChunkSumPlan check_chunk_sum_backward_inputs(const at::Tensor& grad, at::TensorList outs,
                                                    const at::Tensor& weights, at::IntArrayRef chunks,
                                                    bool allow_half) {
  auto plan = check_chunk_sum_inputs(outs, weights, chunks, allow_half);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(plan.result_sizes), "grad: expected shape ",
              at::IntArrayRef(plan.result_sizes), " like the result, got ", grad.sizes());
  check_same_dtype(grad, "grad", outs[0], "outs[0]");
  check_same_device(grad, "grad", outs[0], "outs[0]");
  return plan;
}

// Weights w[i] of the L live operators from their alpha values, as in
// fastnas/ops/_reference.py::mixed_node_weights. Live entries of one edge are
// contiguous (row-major order), so softmax works on runs of equal `edge`.
template <typename acc_t>
FASTNAS_HOST_DEVICE void live_weights(const acc_t* alpha, const int32_t* edge, int L, MixedNodeMode mode,
                                      acc_t inv_temperature, acc_t* w) {
  if (mode == MixedNodeMode::Softmax) {
    for (int start = 0; start < L;) {
      int stop = start + 1;
      while (stop < L && edge[stop] == edge[start]) ++stop;
      acc_t top = alpha[start] * inv_temperature;
      for (int i = start + 1; i < stop; ++i) top = alpha[i] * inv_temperature > top ? alpha[i] * inv_temperature : top;
      acc_t total = 0;
      for (int i = start; i < stop; ++i) {
        w[i] = ::exp(alpha[i] * inv_temperature - top);
        total += w[i];
      }
      for (int i = start; i < stop; ++i) w[i] /= total;
      start = stop;
    }
  } else if (mode == MixedNodeMode::Sigmoid) {
    for (int i = 0; i < L; ++i) w[i] = acc_t(1) / (acc_t(1) + ::exp(-alpha[i] * inv_temperature));
  } else if (mode == MixedNodeMode::ReluNorm) {
    acc_t total = 0;
    for (int i = 0; i < L; ++i) total += alpha[i] > 0 ? alpha[i] : acc_t(0);
    for (int i = 0; i < L; ++i) w[i] = total > 0 && alpha[i] > 0 ? alpha[i] / total : acc_t(0);
  } else {
    for (int i = 0; i < L; ++i) w[i] = alpha[i];
  }
}

// Gradient of the loss w.r.t. the live alpha values, given the weights w and
// dot[i] = sum(grad * outs[i]) (the gradient w.r.t. w[i]).
template <typename acc_t>
FASTNAS_HOST_DEVICE void live_alpha_grad(const acc_t* alpha, const acc_t* w, const acc_t* dot,
                                         const int32_t* edge, int L, MixedNodeMode mode, acc_t inv_temperature,
                                         acc_t* grad_alpha) {
  if (mode == MixedNodeMode::Softmax) {
    for (int start = 0; start < L;) {
      int stop = start + 1;
      while (stop < L && edge[stop] == edge[start]) ++stop;
      acc_t mean_dot = 0;
      for (int i = start; i < stop; ++i) mean_dot += w[i] * dot[i];
      for (int i = start; i < stop; ++i) grad_alpha[i] = w[i] * (dot[i] - mean_dot) * inv_temperature;
      start = stop;
    }
  } else if (mode == MixedNodeMode::Sigmoid) {
    for (int i = 0; i < L; ++i) grad_alpha[i] = w[i] * (acc_t(1) - w[i]) * dot[i] * inv_temperature;
  } else if (mode == MixedNodeMode::ReluNorm) {
    acc_t total = 0, mean_dot = 0;
    for (int i = 0; i < L; ++i) {
      total += alpha[i] > 0 ? alpha[i] : acc_t(0);
      mean_dot += w[i] * dot[i];
    }
    for (int i = 0; i < L; ++i) grad_alpha[i] = total > 0 && alpha[i] > 0 ? (dot[i] - mean_dot) / total : acc_t(0);
  } else {
    for (int i = 0; i < L; ++i) grad_alpha[i] = dot[i];
  }
}

}  // namespace fastnas

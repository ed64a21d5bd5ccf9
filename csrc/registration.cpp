// The one schema file: every fastnas op is declared here and implemented per
// backend in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu (TORCH_LIBRARY_IMPL).
// Fake (meta) kernels and autograd are registered in Python (fastnas/ops/).
#include <torch/library.h>

TORCH_LIBRARY(fastnas, m) {
  // Mixed node: sum over live (edge, op) of w(alpha)[e, k] * outs[i].
  m.def("mixed_node(Tensor[] outs, Tensor alpha, Tensor mask, str mode, float temperature) -> Tensor");
  m.def("mixed_node_backward(Tensor grad, Tensor[] outs, Tensor alpha, Tensor mask, str mode, "
        "float temperature) -> (Tensor[], Tensor)");
  // Grouped node value: sum over terms t and chunks j of weights[s] * outs[t][:, j * C: (j + 1) * C].
  m.def("chunk_sum(Tensor[] outs, Tensor weights, int[] chunks) -> Tensor");
  m.def("chunk_sum_backward(Tensor grad, Tensor[] outs, Tensor weights, int[] chunks) -> (Tensor[], Tensor)");
  // F.conv2d(x, weight, stride, padding, dilation, groups=C) of x [B, C, H, W] and weight [C, 1, k_h, k_w].
  m.def("depthwise_conv2d(Tensor x, Tensor weight, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def("depthwise_conv2d_backward(Tensor grad, Tensor x, Tensor weight, int[2] stride, int[2] padding, "
        "int[2] dilation, bool[2] output_mask) -> (Tensor, Tensor)");
  // Attention-transfer loss over (student, teacher) feature-map pairs.
  m.def("at_loss(Tensor[] student, Tensor[] teacher, float p) -> Tensor");
  m.def("at_loss_backward(Tensor grad, Tensor[] student, Tensor[] teacher, float p) -> Tensor[]");
  // Kendall tau-b / Spearman rho of every row of scores [P, N] with target [N].
  m.def("rank_corr(Tensor scores, Tensor target, str method) -> Tensor");
  // Elementwise transform + reduction of each tensor of a list, one value per tensor.
  m.def("foreach_reduce(Tensor[] tensors, str transform, str reduction) -> Tensor");
  m.def("foreach_reduce_backward(Tensor grad, Tensor[] tensors, str transform, str reduction) -> Tensor[]");
  // Row-wise distance of feature pairs [B, D] -> [B].
  m.def("pair_distance(Tensor student, Tensor teacher, str metric) -> Tensor");
  m.def("pair_distance_backward(Tensor grad, Tensor student, Tensor teacher, str metric) -> (Tensor, Tensor)");
  // DisWOT relation distance between row-normalized batch Gram matrices.
  m.def("gram_distance(Tensor student, Tensor teacher) -> Tensor");
  m.def("gram_distance_backward(Tensor grad, Tensor student, Tensor teacher) -> (Tensor, Tensor)");
}

// C++ tests of the ops through the dispatcher, without Python: hand-computed
// values and the error messages. Run by ctest (see CMakeLists.txt).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  if (!ok) ++failures;
}

void expect_error(const std::function<void()>& call, const std::string& fragment, const std::string& what) {
  try {
    call();
    expect(false, what + " (no error raised)");
  } catch (const c10::Error& e) {
    expect(std::string(e.what()).find(fragment) != std::string::npos, what);
  }
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using MixedNode = at::Tensor(at::TensorList, const at::Tensor&, const at::Tensor&, c10::string_view, double);

void test_mixed_node() {
  const auto mixed_node = op<MixedNode>("fastnas::mixed_node");
  // Edge 0: alpha (0, log 3) -> softmax weights (1/4, 3/4); edge 1 keeps one op -> weight 1.
  auto alpha = at::tensor({0.0, std::log(3.0), 5.0, -2.0}, at::kDouble).view({2, 2});
  auto mask = at::tensor({1, 1, 0, 1}).to(at::kBool).view({2, 2});
  std::vector<at::Tensor> outs = {at::full({3}, 4.0, at::kDouble), at::full({3}, 8.0, at::kDouble),
                                  at::full({3}, 1.0, at::kDouble)};
  auto result = mixed_node.call(outs, alpha, mask, "softmax", 1.0);
  expect(at::allclose(result, at::full({3}, 1.0 + 6.0 + 1.0, at::kDouble)), "mixed_node softmax hand-computed");

  // relu_norm: relu(1, 3, -1) / 4 = (1/4, 3/4, 0).
  auto alpha3 = at::tensor({1.0, 3.0, -1.0}, at::kDouble).view({1, 3});
  auto all_live = at::ones({1, 3}, at::kBool);
  std::vector<at::Tensor> outs3 = {at::full({2}, 2.0, at::kDouble), at::full({2}, 6.0, at::kDouble),
                                   at::full({2}, 100.0, at::kDouble)};
  auto relu = mixed_node.call(outs3, alpha3, all_live, "relu_norm", 1.0);
  expect(at::allclose(relu, at::full({2}, 0.5 + 4.5, at::kDouble)), "mixed_node relu_norm hand-computed");

  expect_error([&] { mixed_node.call({outs[0]}, alpha, mask, "softmax", 1.0); },
               "outs: expected one tensor per live operator", "mixed_node rejects a wrong number of outs");
  expect_error([&] { mixed_node.call(outs, alpha, mask, "gumbel", 1.0); }, "mode: expected one of",
               "mixed_node rejects an unknown mode");
}

void test_rank_corr() {
  const auto rank_corr = op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>("fastnas::rank_corr");
  // target 1..4; row 0 identical order (tau = rho = 1), row 1 one swap of the first two:
  // Kendall (5 concordant - 1 discordant) / 6 = 2/3, Spearman 1 - 6 * 2 / (4 * 15) = 0.8.
  auto target = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble);
  auto scores = at::tensor({10.0, 20.0, 30.0, 40.0, 2.0, 1.0, 3.0, 4.0}, at::kDouble).view({2, 4});
  auto kendall = rank_corr.call(scores, target, "kendall");
  auto spearman = rank_corr.call(scores, target, "spearman");
  expect(at::allclose(kendall, at::tensor({1.0, 2.0 / 3.0}, at::kDouble)), "rank_corr kendall hand-computed");
  expect(at::allclose(spearman, at::tensor({1.0, 0.8}, at::kDouble)), "rank_corr spearman hand-computed");
  expect_error([&] { rank_corr.call(scores, target, "pearson"); }, "method: expected one of",
               "rank_corr rejects an unknown method");
}

using DepthwiseConv2d = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                  at::IntArrayRef);

void test_depthwise_conv2d() {
  const auto conv = op<DepthwiseConv2d>("fastnas::depthwise_conv2d");
  // One 3x3 map 1..9, a 2x2 kernel (1, 2; 3, 4), padding 1: a 4x4 output whose corner taps read one pixel.
  auto x = at::arange(1.0, 10.0, at::kDouble).view({1, 1, 3, 3});
  auto weight = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble).view({1, 1, 2, 2});
  auto out = conv.call(x, weight, {1, 1}, {1, 1}, {1, 1});
  expect(out.sizes() == at::IntArrayRef({1, 1, 4, 4}), "depthwise_conv2d output shape");
  expect(out[0][0][0][0].item<double>() == 4.0, "depthwise_conv2d corner: 4 * x[0, 0]");
  expect(out[0][0][1][1].item<double>() == 1 * 1 + 2 * 2 + 3 * 4 + 4 * 5, "depthwise_conv2d inner value");
  expect(out[0][0][3][3].item<double>() == 9.0, "depthwise_conv2d far corner: 1 * x[2, 2]");
  expect_error([&] { conv.call(x, weight.view({1, 1, 4, 1}).repeat({2, 1, 1, 1}), {1, 1}, {1, 1}, {1, 1}); },
               "weight: expected shape [1, 1, k_h, k_w]", "depthwise_conv2d rejects a weight per other channels");
}

}  // namespace

int main() {
  test_mixed_node();
  test_rank_corr();
  test_depthwise_conv2d();
  std::cout << (failures ? "FAILED: " : "all passed: ") << failures << " failure(s)\n";
  return failures ? 1 : 0;
}

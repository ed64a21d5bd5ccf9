// Input checks shared by every op and backend. Each failure names the argument
// and says what was expected and what was given, so a user can act on it.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define FASTNAS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTNAS_HOST_DEVICE inline
#endif

namespace fastnas {

// float32/float64 everywhere; float16/bfloat16 only where `allow_half` (the CUDA
// kernels, and the CPU kernels of the ops a search step calls under autocast).
inline void check_floating(const at::Tensor& t, const std::string& name, bool allow_half) {
  const auto dtype = t.scalar_type();
  const bool ok = dtype == at::kFloat || dtype == at::kDouble ||
                  (allow_half && (dtype == at::kHalf || dtype == at::kBFloat16));
  TORCH_CHECK(ok, name, ": expected a floating tensor (float32, float64",
              allow_half ? ", float16 or bfloat16" : "", "), got ", dtype);
}

inline void check_same_device(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                              const std::string& ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, ": expected a tensor on ", ref.device(), " like ",
              ref_name, ", got one on ", t.device());
}

inline void check_same_dtype(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                             const std::string& ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ", ref.scalar_type(),
              " like ", ref_name, ", got ", t.scalar_type());
}

inline void check_dim(const at::Tensor& t, const std::string& name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, name, ": expected a ", dim, "-d tensor ", layout, ", got shape ", t.sizes());
}

inline void check_same_shape(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                             const std::string& ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), name, ": expected shape ", ref.sizes(), " like ", ref_name,
              ", got ", t.sizes());
}

// Maps an option string to its enum value, listing the valid names on failure.
template <typename Enum, size_t N>
Enum parse_option(c10::string_view value, const char* arg, const std::array<const char*, N>& names) {
  for (size_t i = 0; i < N; ++i) {
    if (value == names[i]) return static_cast<Enum>(i);
  }
  std::string valid;
  for (size_t i = 0; i < N; ++i) valid += std::string(i ? ", " : "") + names[i];
  TORCH_CHECK(false, arg, ": expected one of ", valid, ", got '", std::string(value), "'");
}

// Contiguous versions of a list of inputs (copies only the non-contiguous ones),
// so that the kernels can index them flat.
inline std::vector<at::Tensor> contiguous_all(at::TensorList tensors) {
  std::vector<at::Tensor> result;
  result.reserve(tensors.size());
  for (const auto& t : tensors) result.push_back(t.contiguous());
  return result;
}

inline std::string indexed(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

}  // namespace fastnas

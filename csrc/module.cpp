// fastnas._C: build facts as a pybind11 module. Importing it also loads the
// TORCH_LIBRARY registrations of every op in this shared library.
#include <torch/extension.h>

#ifndef FASTNAS_VERSION
#define FASTNAS_VERSION "unknown"
#endif

namespace {

bool with_cuda() {
#ifdef FASTNAS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<std::string> cuda_arch_list() {
  std::vector<std::string> archs;
#ifdef FASTNAS_CUDA_ARCH_LIST
  std::stringstream list(FASTNAS_CUDA_ARCH_LIST);
  std::string arch;
  while (std::getline(list, arch, ';')) {
    if (!arch.empty()) archs.push_back(arch);
  }
#endif
  return archs;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastnas compiled core: ops are in torch.ops.fastnas; this module reports build facts";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled into this build");
  m.def("cuda_arch_list", &cuda_arch_list, "CUDA architectures the kernels were compiled for");
  m.def("version", []() { return std::string(FASTNAS_VERSION); }, "fastnas version of this build");
}

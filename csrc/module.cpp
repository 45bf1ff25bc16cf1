// The extension module dsp_monai._C: an empty Python module whose import loads this library, which registers
// the operators of the `dsp_monai` namespace with PyTorch's dispatcher. Each op family adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/ops/<family>.cpp and its kernels in csrc/ops/{cpu,cuda}/.

#include <Python.h>

#include <sstream>
#include <string>

#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "Compiled operators of dsp_monai (registered as torch.ops.dsp_monai.*)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
}

namespace dsp_monai {
namespace {

// JSON describing how this binary was built; read by `python -m dsp_monai.info`.
std::string build_info() {
  std::ostringstream out;
  out << "{\"cpu\": true";
#ifdef WITH_CUDA
  static const int archs[] = {DSP_MONAI_CUDA_ARCHS};
  out << ", \"cuda\": true, \"cuda_version\": \"" << CUDART_VERSION / 1000 << "." << (CUDART_VERSION % 1000) / 10
      << "\", \"cuda_archs\": [";
  for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); ++i) {
    out << (i ? ", " : "") << "\"" << archs[i] / 10 << "." << archs[i] % 10 << "\"";
  }
  out << "]";
#else
  out << ", \"cuda\": false, \"cuda_version\": null, \"cuda_archs\": []";
#endif
#ifdef _OPENMP
  out << ", \"openmp\": true";
#else
  out << ", \"openmp\": false";
#endif
  out << ", \"torch_abi\": " << _GLIBCXX_USE_CXX11_ABI << "}";
  return out.str();
}

}  // namespace

TORCH_LIBRARY(dsp_monai, m) {
  m.def("_build_info() -> str", &build_info);
}

}  // namespace dsp_monai

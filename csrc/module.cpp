// The extension module dsp_monai._C: a Python module holding BUILD_INFO; importing it loads this library, which
// registers the operators of the `dsp_monai` namespace with PyTorch's dispatcher. Each op family adds its schemas
// with TORCH_LIBRARY_FRAGMENT in csrc/ops/<family>.cpp and its kernels in csrc/ops/{cpu,cuda}/.

#include <Python.h>

#include <cstdarg>
#include <cstdio>

#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace dsp_monai {
namespace {

// Appends printf-formatted text at text[*used] (at most size bytes in all), advancing *used.
__attribute__((format(printf, 4, 5))) void append(char* text, size_t size, size_t* used, const char* format, ...) {
  if (*used >= size) {
    return;
  }
  va_list values;
  va_start(values, format);
  const int written = std::vsnprintf(text + *used, size - *used, format, values);
  va_end(values);
  if (written > 0) {
    *used += static_cast<size_t>(written);
  }
}

// JSON describing how this binary was built; exposed as the module attribute _C.BUILD_INFO. Formatted with
// snprintf into a static buffer, with no C++ library types: on the GPU machine (torch 2.11, the extension built with
// /opt/gcc's g++) both a std::ostringstream-built string returned through the dispatcher and one built in PyInit__C
// crashed the process.
const char* build_info() {
  static char text[512];
  size_t used = 0;
  append(text, sizeof(text), &used, "{\"cpu\": true");
#ifdef WITH_CUDA
  static const int archs[] = {DSP_MONAI_CUDA_ARCHS};
  append(text, sizeof(text), &used, ", \"cuda\": true, \"cuda_version\": \"%d.%d\", \"cuda_archs\": [",
         CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10);
  for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); ++i) {
    append(text, sizeof(text), &used, "%s\"%d.%d\"", i ? ", " : "", archs[i] / 10, archs[i] % 10);
  }
  append(text, sizeof(text), &used, "]");
#else
  append(text, sizeof(text), &used, ", \"cuda\": false, \"cuda_version\": null, \"cuda_archs\": []");
#endif
#ifdef _OPENMP
  append(text, sizeof(text), &used, ", \"openmp\": true");
#else
  append(text, sizeof(text), &used, ", \"openmp\": false");
#endif
  append(text, sizeof(text), &used, ", \"torch_abi\": %d}", static_cast<int>(_GLIBCXX_USE_CXX11_ABI));
  return text;
}

}  // namespace

// The namespace's owner; csrc/ops/<family>.cpp add the operators with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(dsp_monai, m) {}

}  // namespace dsp_monai

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "Compiled operators of dsp_monai (registered as torch.ops.dsp_monai.*)", -1,
      nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddStringConstant(module, "BUILD_INFO", dsp_monai::build_info()) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

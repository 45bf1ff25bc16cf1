// CPU kernels of prototype_logsumexp: the baseline build of prototype_logsumexp_kernel_impl.h, the AVX2 + FMA and
// AVX-512 builds from prototype_logsumexp_kernel_avx2.cpp / _avx512.cpp, the run-time choice between them, and the
// dispatcher registration.
//
// The widest path the processor supports is used unless the environment variable DSP_MONAI_CPU_PATH (read once,
// when the first CPU kernel runs) or torch.ops.dsp_monai._prototype_logsumexp_cpu_path(name) names another one:
// "baseline", "avx2", "avx512" or "auto". Tests and benchmarks use it to run every path on one machine.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/prototype_logsumexp.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define DSP_CPU_ISA baseline
#define DSP_VEC_BYTES 16
#define DSP_VEC_REGS 16
#include "ops/cpu/prototype_logsumexp_kernel_impl.h"
#undef DSP_VEC_REGS
#undef DSP_VEC_BYTES
#undef DSP_CPU_ISA

namespace dsp_monai {
namespace prototype_lse {

#if defined(__x86_64__) && defined(__GNUC__)
#define DSP_DECLARE_ISA(isa)                                                                                       \
  namespace isa {                                                                                                  \
  void forward_entry(const Problem& p, at::Tensor& logits, at::Tensor& log_z);                                    \
  void backward_entry(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,                \
                      at::Tensor& grad_embeddings, at::Tensor& grad_pbar);                                        \
  }
DSP_DECLARE_ISA(avx2)
DSP_DECLARE_ISA(avx512)
#undef DSP_DECLARE_ISA
#endif

namespace {

enum CpuPath : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2, kNumPaths = 3, kAuto = -1 };
constexpr const char* kPathNames[kNumPaths] = {"baseline", "avx2", "avx512"};
constexpr const char* kPathNeeds[kNumPaths] = {"", "AVX2 and FMA", "AVX-512 F, BW, DQ and VL"};

bool supported(int path) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (path) {
    case kBaseline: return true;
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvx512:
      return supported(kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    default: return false;
  }
#else
  return path == kBaseline;
#endif
}

int best_path() {
  for (int path = kNumPaths - 1; path > kBaseline; --path) {
    if (supported(path)) return path;
  }
  return kBaseline;
}

std::string available_paths() {
  std::string names;
  for (int path = 0; path < kNumPaths; ++path) {
    if (supported(path)) names += (names.empty() ? "" : ",") + std::string(kPathNames[path]);
  }
  return names;
}

// The path named `name` ("auto" = the widest supported); raises on an unknown or unsupported name.
int parse_path(const std::string& name, const char* source) {
  if (name == "auto") return best_path();
  for (int path = 0; path < kNumPaths; ++path) {
    if (name != kPathNames[path]) continue;
    TORCH_CHECK(supported(path), "prototype_logsumexp: ", source, " asks for the CPU path '", name, "', which needs ",
                kPathNeeds[path], "; this processor supports: ", available_paths());
    return path;
  }
  TORCH_CHECK(false, "prototype_logsumexp: ", source, " names an unknown CPU path '", name,
              "'; expected one of auto, baseline, avx2, avx512");
  return kBaseline;
}

std::atomic<int> g_path{kAuto};

int current_path() {
  int path = g_path.load();
  if (path == kAuto) {
    const char* env = std::getenv("DSP_MONAI_CPU_PATH");
    const int chosen = (env != nullptr && *env != '\0') ? parse_path(env, "DSP_MONAI_CPU_PATH") : best_path();
    int expected = kAuto;
    g_path.compare_exchange_strong(expected, chosen);
    path = g_path.load();
  }
  return path;
}

// Sets the path when `name` is not empty; returns the name of the path in use afterwards.
std::string cpu_path(const std::string& name) {
  if (!name.empty()) g_path.store(parse_path(name, "_prototype_logsumexp_cpu_path"));
  return kPathNames[current_path()];
}

std::string cpu_paths() { return available_paths(); }

// The outputs are large, freshly allocated and written once: on Linux, ask for transparent huge pages for their
// 2 MiB-aligned interior before the first write (a hint; ignored where THP is off), so that filling them takes
// a few page faults instead of one per 4 KiB page. At B=2, D=64, 256x256 this removes about a third of the
// backward's CPU time.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& embeddings, const at::Tensor& prototypes,
                                               double temperature, const std::optional<at::Tensor>& allowed,
                                               const std::optional<at::Tensor>& valid) {
  const Problem p = make_problem(embeddings, prototypes, temperature, allowed, valid);
  at::Tensor logits = at::empty({p.batch, p.classes, p.pixels}, embeddings.options());
  at::Tensor log_z = at::empty({p.classes}, embeddings.options().dtype(p.acc_type));
  advise_huge_pages(logits);
  switch (current_path()) {
#if defined(__x86_64__) && defined(__GNUC__)
    case kAvx512: avx512::forward_entry(p, logits, log_z); break;
    case kAvx2: avx2::forward_entry(p, logits, log_z); break;
#endif
    default: baseline::forward_entry(p, logits, log_z); break;
  }
  return {logits.view(p.logits_shape), log_z};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const std::optional<at::Tensor>& grad_logits,
                                                const std::optional<at::Tensor>& grad_log_z,
                                                const at::Tensor& embeddings, const at::Tensor& prototypes,
                                                double temperature, const std::optional<at::Tensor>& allowed,
                                                const std::optional<at::Tensor>& valid, const at::Tensor& log_z) {
  const BackwardProblem backward =
      make_backward_problem(grad_logits, grad_log_z, embeddings, prototypes, temperature, allowed, valid, log_z);
  const Problem& p = backward.problem;
  const at::Tensor& gl = backward.grad_logits;
  const BackwardConstants& k = backward.constants;
  at::Tensor grad_embeddings = at::empty_like(p.embeddings);
  at::Tensor grad_pbar = at::empty({p.classes, p.dim}, embeddings.options().dtype(at::kDouble));
  advise_huge_pages(grad_embeddings);
  switch (current_path()) {
#if defined(__x86_64__) && defined(__GNUC__)
    case kAvx512: avx512::backward_entry(p, gl, k, grad_embeddings, grad_pbar); break;
    case kAvx2: avx2::backward_entry(p, gl, k, grad_embeddings, grad_pbar); break;
#endif
    default: baseline::backward_entry(p, gl, k, grad_embeddings, grad_pbar); break;
  }
  return {grad_embeddings.view(embeddings.sizes()),
          prototypes_backward(prototypes, grad_pbar.to(p.acc_type), temperature)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dsp_monai, m) {
  m.def("_prototype_logsumexp_cpu_paths() -> str", &cpu_paths);
  m.def("_prototype_logsumexp_cpu_path(str name='') -> str", &cpu_path);
}

TORCH_LIBRARY_IMPL(dsp_monai, CPU, m) {
  m.impl("prototype_logsumexp", &forward_cpu);
  m.impl("prototype_logsumexp_backward", &backward_cpu);
}

}  // namespace prototype_lse
}  // namespace dsp_monai

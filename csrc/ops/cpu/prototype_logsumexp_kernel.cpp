// CPU kernels of prototype_logsumexp: the baseline build of prototype_logsumexp_kernel_impl.h, the AVX2 + FMA
// build from prototype_logsumexp_kernel_avx2.cpp when the processor has it, and the dispatcher registration.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/prototype_logsumexp.h"

#define DSP_CPU_ISA baseline
#include "ops/cpu/prototype_logsumexp_kernel_impl.h"
#undef DSP_CPU_ISA

namespace dsp_monai {
namespace prototype_lse {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx2 {
void forward_entry(const Problem& p, at::Tensor& logits, at::Tensor& log_z);
void backward_entry(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,
                    at::Tensor& grad_embeddings, at::Tensor& grad_pbar);
}  // namespace avx2

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

namespace {

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& embeddings, const at::Tensor& prototypes,
                                               double temperature, const std::optional<at::Tensor>& allowed,
                                               const std::optional<at::Tensor>& valid) {
  const Problem p = make_problem(embeddings, prototypes, temperature, allowed, valid);
  at::Tensor logits = at::empty({p.batch, p.classes, p.pixels}, embeddings.options());
  at::Tensor log_z = at::empty({p.classes}, embeddings.options().dtype(p.acc_type));
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2()) {
    avx2::forward_entry(p, logits, log_z);
    return {logits.view(p.logits_shape), log_z};
  }
#endif
  baseline::forward_entry(p, logits, log_z);
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
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2()) {
    avx2::backward_entry(p, gl, k, grad_embeddings, grad_pbar);
  } else {
    baseline::backward_entry(p, gl, k, grad_embeddings, grad_pbar);
  }
#else
  baseline::backward_entry(p, gl, k, grad_embeddings, grad_pbar);
#endif
  return {grad_embeddings.view(embeddings.sizes()),
          prototypes_backward(prototypes, grad_pbar.to(p.acc_type), temperature)};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsp_monai, CPU, m) {
  m.impl("prototype_logsumexp", &forward_cpu);
  m.impl("prototype_logsumexp_backward", &backward_cpu);
}

}  // namespace prototype_lse
}  // namespace dsp_monai

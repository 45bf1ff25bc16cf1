// prototype_logsumexp: cosine prototype scores fused with the decoupled log-sum-exp of the DSP loss
// (docs/ops.md §1, docs/method.md §2, §4, §5). This header holds what the CPU and CUDA kernels share: the
// argument checks, the flattened problem description and the host-side prototype maths.
#pragma once

#include <optional>
#include <vector>

#include <ATen/ATen.h>

namespace dsp_monai {
namespace prototype_lse {

// Largest class count: `allowed` is an int64 bit mask with one bit per class.
constexpr int64_t kMaxClasses = 63;
// Norm floor of torch.nn.functional.normalize: x / max(||x||, eps).
constexpr double kNormEps = 1e-12;

// Validates the arguments of the forward op; raises a c10::Error naming the argument, what was expected and
// what arrived. The Python fake registration mirrors these messages.
void check_arguments(const at::Tensor& embeddings, const at::Tensor& prototypes, double temperature,
                     const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid);

// The op with its inputs flattened to (B, D, N) pixels and the prototypes reduced to one scaled mean vector
// per class: pbar_scaled[c] = mean_k normalize(P[c, k]) / temperature, in the accumulation dtype.
struct Problem {
  at::Tensor embeddings;   // (B, D, N), contiguous, input dtype
  at::Tensor pbar_scaled;  // (C, D), contiguous, float32 (float64 for float64 inputs)
  at::Tensor allowed;      // (B, N) int64 contiguous, or undefined = every class possible
  at::Tensor valid;        // (B, N) bool contiguous, or undefined = every pixel valid
  int64_t batch = 0, dim = 0, pixels = 0, classes = 0;
  std::vector<int64_t> logits_shape;  // (B, C, *spatial)
  at::ScalarType acc_type = at::kFloat;
};

Problem make_problem(const at::Tensor& embeddings, const at::Tensor& prototypes, double temperature,
                     const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid);

// Per-class constants of the backward pass (all (C,) in the accumulation dtype), computed from log Z and
// the incoming gradient g of log Z, so that for a valid pixel j
//   d(sum_c g_c log Z_c)/d s_k(j) = exp(s_k - ell_k) * rho_k + [k not in A_j] * gself_k * exp(s_k - lself_k),
// with ell_k = min_{c != k} log Z_c, rho_k = sum_{c != k} g_c exp(ell_k - log Z_c) (each factor <= 1, so
// nothing overflows), gself_k = g_k and lself_k = log Z_k. Classes with Z_c = 0 (log Z_c = -inf) contribute
// nothing.
struct BackwardConstants {
  at::Tensor ell, rho, gself, lself;
};

BackwardConstants make_backward_constants(const at::Tensor& log_z, const std::optional<at::Tensor>& grad_log_z,
                                          at::ScalarType acc_type, const at::Device& device);

// Everything a backend's backward needs: the problem, the incoming logits gradient as (B, C, N) in the embeddings'
// dtype (undefined when absent) and the per-class constants; checks the gradient and log Z shapes.
struct BackwardProblem {
  Problem problem;
  at::Tensor grad_logits;
  BackwardConstants constants;
};

BackwardProblem make_backward_problem(const std::optional<at::Tensor>& grad_logits,
                                      const std::optional<at::Tensor>& grad_log_z, const at::Tensor& embeddings,
                                      const at::Tensor& prototypes, double temperature,
                                      const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid,
                                      const at::Tensor& log_z);

// Chains d loss / d pbar_scaled (C, D) back to the prototypes (C, K, D) through the temperature, the mean over
// K and the per-vector normalisation; returns a tensor of the prototypes' dtype.
at::Tensor prototypes_backward(const at::Tensor& prototypes, const at::Tensor& grad_pbar_scaled, double temperature);

}  // namespace prototype_lse
}  // namespace dsp_monai

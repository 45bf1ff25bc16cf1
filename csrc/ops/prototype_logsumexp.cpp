// Schemas of the prototype_logsumexp op family and the host-side pieces both backends share.
#include "ops/prototype_logsumexp.h"

#include <cmath>
#include <sstream>

#include <torch/library.h>

#include "ops/common.h"

namespace dsp_monai {
namespace prototype_lse {

namespace {

constexpr const char* kOp = "prototype_logsumexp: ";

void check_mask(const std::optional<at::Tensor>& mask, const char* name, at::ScalarType expected_dtype,
                const char* dtype_text, const at::Tensor& embeddings) {
  if (!mask.has_value() || !mask->defined()) return;
  const at::Tensor& m = *mask;
  TORCH_CHECK(m.scalar_type() == expected_dtype, kOp, name, " must be ", dtype_text, "; got dtype ",
              dtype_name(m.scalar_type()));
  TORCH_CHECK(m.device() == embeddings.device(), kOp, name, " must be on the device of embeddings (",
              device_str(embeddings.device()), "); got ", device_str(m.device()));
  std::vector<int64_t> expected{embeddings.size(0)};
  for (int64_t d = 2; d < embeddings.dim(); ++d) expected.push_back(embeddings.size(d));
  TORCH_CHECK(m.sizes().vec() == expected, kOp, name, " must have shape (B, *spatial) = ", shape_str(expected),
              " to match embeddings; got ", shape_str(m.sizes()));
}

}  // namespace

void check_arguments(const at::Tensor& embeddings, const at::Tensor& prototypes, double temperature,
                     const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid) {
  TORCH_CHECK(embeddings.dim() >= 3, kOp,
              "embeddings must have shape (B, D, *spatial) with at least one spatial dim; got shape ",
              shape_str(embeddings.sizes()));
  const auto etype = embeddings.scalar_type();
  TORCH_CHECK(etype == at::kHalf || etype == at::kBFloat16 || etype == at::kFloat || etype == at::kDouble, kOp,
              "embeddings must be torch.float16, torch.bfloat16, torch.float32 or torch.float64; got ",
              dtype_name(etype));
  TORCH_CHECK(prototypes.dim() == 3, kOp, "prototypes must have shape (C, K, D); got shape ",
              shape_str(prototypes.sizes()));
  TORCH_CHECK(prototypes.size(0) >= 1 && prototypes.size(1) >= 1, kOp,
              "prototypes must hold at least one class and one prototype per class; got shape ",
              shape_str(prototypes.sizes()));
  TORCH_CHECK(prototypes.size(0) <= kMaxClasses, kOp, "prototypes has C=", prototypes.size(0),
              " classes but at most ", kMaxClasses, " are supported (allowed is an int64 bit mask)");
  TORCH_CHECK(prototypes.size(2) == embeddings.size(1), kOp, "prototypes has D=", prototypes.size(2),
              " but embeddings has D=", embeddings.size(1), " channels (dim 1); they must agree");
  TORCH_CHECK(prototypes.device() == embeddings.device(), kOp, "prototypes must be on the device of embeddings (",
              device_str(embeddings.device()), "); got ", device_str(prototypes.device()));
  const auto ptype = prototypes.scalar_type();
  const bool reduced = etype == at::kHalf || etype == at::kBFloat16;
  TORCH_CHECK(ptype == etype || (reduced && ptype == at::kFloat), kOp, "prototypes must have dtype ",
              dtype_name(etype), " (that of embeddings)", reduced ? " or torch.float32" : "", "; got ",
              dtype_name(ptype));
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0.0, kOp,
              "temperature must be a finite number > 0; got ", temperature);
  check_mask(allowed, "allowed", at::kLong, "an int64 bit mask (bit c set = class c possible)", embeddings);
  check_mask(valid, "valid", at::kBool, "a bool mask (False = padding)", embeddings);
}

Problem make_problem(const at::Tensor& embeddings, const at::Tensor& prototypes, double temperature,
                     const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid) {
  check_arguments(embeddings, prototypes, temperature, allowed, valid);
  Problem p;
  p.batch = embeddings.size(0);
  p.dim = embeddings.size(1);
  p.classes = prototypes.size(0);
  p.pixels = 1;
  p.logits_shape = {p.batch, p.classes};
  for (int64_t d = 2; d < embeddings.dim(); ++d) {
    p.pixels *= embeddings.size(d);
    p.logits_shape.push_back(embeddings.size(d));
  }
  p.acc_type = embeddings.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  p.embeddings = embeddings.contiguous().view({p.batch, p.dim, p.pixels});
  const at::Tensor protos = prototypes.to(p.acc_type);
  const at::Tensor unit = protos / protos.norm(2, -1, true).clamp_min(kNormEps);
  p.pbar_scaled = (unit.mean(1) / temperature).contiguous();
  if (allowed.has_value() && allowed->defined()) p.allowed = allowed->contiguous().view({p.batch, p.pixels});
  if (valid.has_value() && valid->defined()) p.valid = valid->contiguous().view({p.batch, p.pixels});
  return p;
}

BackwardConstants make_backward_constants(const at::Tensor& log_z, const std::optional<at::Tensor>& grad_log_z,
                                          at::ScalarType acc_type, const at::Device& device) {
  const int64_t classes = log_z.size(0);
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
  const at::Tensor lz = log_z.to(opts);
  const at::Tensor finite = at::isfinite(lz);
  at::Tensor g = (grad_log_z.has_value() && grad_log_z->defined()) ? grad_log_z->to(opts) : at::zeros_like(lz);
  g = at::where(finite, g, at::zeros_like(g));
  // others[k, c]: class c != k with a finite log Z_c.
  const at::Tensor others = finite.unsqueeze(0) & ~at::eye(classes, opts.dtype(at::kBool));
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor lz_rows = lz.unsqueeze(0).expand({classes, classes});
  at::Tensor ell = at::where(others, lz_rows, at::full_like(lz_rows, inf)).amin(1);
  const at::Tensor has_other = others.any(1);
  ell = at::where(has_other, ell, at::zeros_like(ell));
  const at::Tensor ratio = at::exp(ell.unsqueeze(1) - at::where(others, lz_rows, ell.unsqueeze(1)));
  const at::Tensor rho = at::where(others, g.unsqueeze(0) * ratio, at::zeros_like(ratio)).sum(1);
  BackwardConstants k;
  k.ell = ell.to(acc_type).contiguous();
  k.rho = rho.to(acc_type).contiguous();
  k.gself = g.to(acc_type).contiguous();
  k.lself = at::where(finite, lz, at::zeros_like(lz)).to(acc_type).contiguous();
  return k;
}

BackwardProblem make_backward_problem(const std::optional<at::Tensor>& grad_logits,
                                      const std::optional<at::Tensor>& grad_log_z, const at::Tensor& embeddings,
                                      const at::Tensor& prototypes, double temperature,
                                      const std::optional<at::Tensor>& allowed, const std::optional<at::Tensor>& valid,
                                      const at::Tensor& log_z) {
  BackwardProblem b;
  b.problem = make_problem(embeddings, prototypes, temperature, allowed, valid);
  const Problem& p = b.problem;
  if (grad_logits.has_value() && grad_logits->defined()) {
    TORCH_CHECK(grad_logits->sizes().vec() == p.logits_shape, "prototype_logsumexp_backward: grad_logits must have ",
                "the logits' shape ", shape_str(p.logits_shape), "; got ", shape_str(grad_logits->sizes()));
    b.grad_logits = grad_logits->to(embeddings.scalar_type()).contiguous().view({p.batch, p.classes, p.pixels});
  }
  TORCH_CHECK(log_z.dim() == 1 && log_z.size(0) == p.classes, "prototype_logsumexp_backward: log_z must have shape (",
              p.classes, ",); got ", shape_str(log_z.sizes()));
  b.constants = make_backward_constants(log_z, grad_log_z, p.acc_type, embeddings.device());
  return b;
}

at::Tensor prototypes_backward(const at::Tensor& prototypes, const at::Tensor& grad_pbar_scaled, double temperature) {
  const at::Tensor protos = prototypes.to(grad_pbar_scaled.scalar_type());
  const int64_t per_class = protos.size(1);
  const at::Tensor norms = protos.norm(2, -1, true);
  const at::Tensor unit = protos / norms.clamp_min(kNormEps);
  const at::Tensor grad_unit = (grad_pbar_scaled / (temperature * per_class)).unsqueeze(1).expand_as(protos);
  const at::Tensor radial = unit * (unit * grad_unit).sum(-1, true);
  const at::Tensor grad = at::where(norms > kNormEps, (grad_unit - radial) / norms, grad_unit / kNormEps);
  return grad.to(prototypes.scalar_type()).contiguous();
}

TORCH_LIBRARY_FRAGMENT(dsp_monai, m) {
  m.def(
      "prototype_logsumexp(Tensor embeddings, Tensor prototypes, float temperature, Tensor? allowed=None, "
      "Tensor? valid=None) -> (Tensor logits, Tensor log_z)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "prototype_logsumexp_backward(Tensor? grad_logits, Tensor? grad_log_z, Tensor embeddings, Tensor prototypes, "
      "float temperature, Tensor? allowed, Tensor? valid, Tensor log_z) -> (Tensor grad_embeddings, "
      "Tensor grad_prototypes)",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace prototype_lse
}  // namespace dsp_monai

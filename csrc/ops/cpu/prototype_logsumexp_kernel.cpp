// CPU kernels of prototype_logsumexp (forward and backward).
//
// Pixels are processed in tiles of kTile consecutive pixels of one image; every inner loop runs over the pixels
// of a tile, so the compiler vectorises it. Tiles are grouped into chunks of kTilesPerChunk; each chunk writes its
// own partial sums (log Z with a running max shift, gradient of the prototypes), and the partials are combined in
// chunk order. Results are therefore identical for any number of threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/prototype_logsumexp.h"

namespace dsp_monai {
namespace prototype_lse {
namespace {

constexpr int64_t kTile = 64;
constexpr int64_t kTilesPerChunk = 64;

struct Tiling {
  int64_t pixels, tiles_per_image, num_tiles, num_chunks;
  Tiling(int64_t batch, int64_t n) : pixels(n) {
    tiles_per_image = (n + kTile - 1) / kTile;
    num_tiles = batch * tiles_per_image;
    num_chunks = (num_tiles + kTilesPerChunk - 1) / kTilesPerChunk;
  }
  int64_t image(int64_t tile) const { return tile / tiles_per_image; }
  int64_t start(int64_t tile) const { return (tile % tiles_per_image) * kTile; }
  int64_t length(int64_t tile) const { return std::min(kTile, pixels - start(tile)); }
};

// Per-thread buffers, each laid out [row][kTile].
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> feat, score, aux, inv, radial, mask, suffix;
  std::vector<int64_t> bits;
  Scratch(int64_t dim, int64_t classes)
      : feat(dim * kTile), score(classes * kTile), aux(classes * kTile), inv(kTile), radial(kTile), mask(kTile),
        suffix(kTile), bits(kTile) {}
};

// Loads pixels [j0, j0 + len) of one image (emb: (D, N)) into feat[d][j], and computes inv[j] = 1 / max(|f_j|, eps)
// and radial[j] = 1 when |f_j| > eps (the normalisation is then a projection) else 0.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* emb, int64_t n, int64_t dim, int64_t j0, int64_t len, Scratch<acc_t>& s) {
  acc_t* __restrict__ inv = s.inv.data();
  std::fill(inv, inv + len, acc_t(0));
  for (int64_t d = 0; d < dim; ++d) {
    const scalar_t* __restrict__ src = emb + d * n + j0;
    acc_t* __restrict__ dst = s.feat.data() + d * kTile;
    for (int64_t j = 0; j < len; ++j) {
      const acc_t v = static_cast<acc_t>(src[j]);
      dst[j] = v;
      inv[j] += v * v;
    }
  }
  const acc_t eps = static_cast<acc_t>(kNormEps);
  for (int64_t j = 0; j < len; ++j) {
    const acc_t norm = std::sqrt(inv[j]);
    s.radial[j] = norm > eps ? acc_t(1) : acc_t(0);
    inv[j] = acc_t(1) / std::max(norm, eps);
  }
}

// score[c][j] = inv[j] * sum_d pbar[c][d] * feat[d][j]: the logits s_c of the tile's pixels.
template <typename acc_t>
void tile_scores(const acc_t* pbar, int64_t classes, int64_t dim, int64_t len, Scratch<acc_t>& s) {
  for (int64_t c = 0; c < classes; ++c) {
    acc_t* __restrict__ out = s.score.data() + c * kTile;
    std::fill(out, out + len, acc_t(0));
    for (int64_t d = 0; d < dim; ++d) {
      const acc_t w = pbar[c * dim + d];
      const acc_t* __restrict__ f = s.feat.data() + d * kTile;
      for (int64_t j = 0; j < len; ++j) out[j] += w * f[j];
    }
    const acc_t* __restrict__ inv = s.inv.data();
    for (int64_t j = 0; j < len; ++j) out[j] *= inv[j];
  }
}

// mask[j] = 1 for valid pixels, bits[j] = possible-class bit mask (all ones when `allowed` is absent).
template <typename acc_t>
void load_masks(const Problem& p, int64_t b, int64_t j0, int64_t len, Scratch<acc_t>& s) {
  const bool* valid = p.valid.defined() ? p.valid.data_ptr<bool>() + b * p.pixels + j0 : nullptr;
  const int64_t* allowed = p.allowed.defined() ? p.allowed.data_ptr<int64_t>() + b * p.pixels + j0 : nullptr;
  for (int64_t j = 0; j < len; ++j) {
    s.mask[j] = (valid == nullptr || valid[j]) ? acc_t(1) : acc_t(0);
    s.bits[j] = allowed == nullptr ? int64_t(-1) : allowed[j];
  }
}

template <typename scalar_t>
void forward_impl(const Problem& p, at::Tensor& logits, at::Tensor& log_z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  std::vector<double> chunk_max(tiling.num_chunks, -std::numeric_limits<double>::infinity());
  std::vector<double> chunk_sum(tiling.num_chunks * classes, 0.0);
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  scalar_t* out = logits.data_ptr<scalar_t>();

  at::parallel_for(0, tiling.num_chunks, 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> s(dim, classes);
    std::vector<acc_t> tile_sum(classes);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double shift = -std::numeric_limits<double>::infinity();
      double* sums = chunk_sum.data() + chunk * classes;
      const int64_t tile_end = std::min(tiling.num_tiles, (chunk + 1) * kTilesPerChunk);
      for (int64_t t = chunk * kTilesPerChunk; t < tile_end; ++t) {
        const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
        load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
        tile_scores<acc_t>(pbar, classes, dim, len, s);
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t* __restrict__ src = s.score.data() + c * kTile;
          scalar_t* __restrict__ dst = out + (b * classes + c) * n + j0;
          for (int64_t j = 0; j < len; ++j) dst[j] = static_cast<scalar_t>(src[j]);
        }
        load_masks<acc_t>(p, b, j0, len, s);
        // Largest valid score of the tile: the shift that keeps every exp() <= 1.
        acc_t tile_max = -std::numeric_limits<acc_t>::infinity();
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t* __restrict__ sc = s.score.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) {
            if (s.mask[j] != acc_t(0)) tile_max = std::max(tile_max, sc[j]);
          }
        }
        if (tile_max == -std::numeric_limits<acc_t>::infinity()) continue;  // no valid pixel
        if (static_cast<double>(tile_max) > shift) {
          const double rescale = std::exp(shift - static_cast<double>(tile_max));
          for (int64_t c = 0; c < classes; ++c) sums[c] *= rescale;
          shift = static_cast<double>(tile_max);
        }
        const acc_t shift_acc = static_cast<acc_t>(shift);
        // score <- e_c = exp(s_c - shift); aux <- prefix sums sum_{k < c} e_k.
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ e = s.score.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) e[j] = std::exp(e[j] - shift_acc);
        }
        std::fill(s.aux.begin(), s.aux.begin() + kTile, acc_t(0));
        for (int64_t c = 1; c < classes; ++c) {
          const acc_t* __restrict__ prev = s.aux.data() + (c - 1) * kTile;
          const acc_t* __restrict__ e = s.score.data() + (c - 1) * kTile;
          acc_t* __restrict__ cur = s.aux.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) cur[j] = prev[j] + e[j];
        }
        // Z_c terms: sum_{k != c} e_k (prefix + suffix, no cancellation) plus e_c where c is not possible.
        std::fill(s.suffix.begin(), s.suffix.end(), acc_t(0));
        for (int64_t c = classes - 1; c >= 0; --c) {
          const acc_t* __restrict__ e = s.score.data() + c * kTile;
          const acc_t* __restrict__ prefix = s.aux.data() + c * kTile;
          acc_t acc = 0;
          for (int64_t j = 0; j < len; ++j) {
            const acc_t others = prefix[j] + s.suffix[j];
            const acc_t impossible = ((s.bits[j] >> c) & 1) ? acc_t(0) : acc_t(1);
            acc += s.mask[j] * (others + impossible * e[j]);
            s.suffix[j] += e[j];
          }
          tile_sum[c] = acc;
        }
        for (int64_t c = 0; c < classes; ++c) sums[c] += static_cast<double>(tile_sum[c]);
      }
      chunk_max[chunk] = shift;
    }
  });

  double shift = -std::numeric_limits<double>::infinity();
  for (double m : chunk_max) shift = std::max(shift, m);
  std::vector<double> total(classes, 0.0);
  if (shift > -std::numeric_limits<double>::infinity()) {
    for (int64_t chunk = 0; chunk < tiling.num_chunks; ++chunk) {
      if (chunk_max[chunk] == -std::numeric_limits<double>::infinity()) continue;
      const double scale = std::exp(chunk_max[chunk] - shift);
      for (int64_t c = 0; c < classes; ++c) total[c] += chunk_sum[chunk * classes + c] * scale;
    }
  }
  at::Tensor result = at::empty({classes}, at::TensorOptions().dtype(at::kDouble));
  double* r = result.data_ptr<double>();
  for (int64_t c = 0; c < classes; ++c) {
    r[c] = total[c] > 0.0 ? shift + std::log(total[c]) : -std::numeric_limits<double>::infinity();
  }
  log_z.copy_(result);
}

template <typename scalar_t>
void backward_impl(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,
                   at::Tensor& grad_embeddings, at::Tensor& grad_pbar) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  std::vector<acc_t> chunk_grad(tiling.num_chunks * classes * dim, acc_t(0));
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const scalar_t* gl = grad_logits.defined() ? grad_logits.data_ptr<scalar_t>() : nullptr;
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  const acc_t* ell = k.ell.data_ptr<acc_t>();
  const acc_t* rho = k.rho.data_ptr<acc_t>();
  const acc_t* gself = k.gself.data_ptr<acc_t>();
  const acc_t* lself = k.lself.data_ptr<acc_t>();
  scalar_t* gout = grad_embeddings.data_ptr<scalar_t>();

  at::parallel_for(0, tiling.num_chunks, 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> s(dim, classes);
    std::vector<acc_t> dot(kTile);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      acc_t* gp = chunk_grad.data() + chunk * classes * dim;
      const int64_t tile_end = std::min(tiling.num_tiles, (chunk + 1) * kTilesPerChunk);
      for (int64_t t = chunk * kTilesPerChunk; t < tile_end; ++t) {
        const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
        load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
        tile_scores<acc_t>(pbar, classes, dim, len, s);
        load_masks<acc_t>(p, b, j0, len, s);
        // aux[k][j] = d loss / d s_k(j).
        std::fill(dot.begin(), dot.end(), acc_t(0));
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t* __restrict__ sc = s.score.data() + c * kTile;
          acc_t* __restrict__ ds = s.aux.data() + c * kTile;
          if (gl != nullptr) {
            const scalar_t* __restrict__ g = gl + (b * classes + c) * n + j0;
            for (int64_t j = 0; j < len; ++j) ds[j] = static_cast<acc_t>(g[j]);
          } else {
            std::fill(ds, ds + len, acc_t(0));
          }
          if (rho[c] != acc_t(0)) {
            for (int64_t j = 0; j < len; ++j) ds[j] += s.mask[j] * rho[c] * std::exp(sc[j] - ell[c]);
          }
          if (gself[c] != acc_t(0)) {
            for (int64_t j = 0; j < len; ++j) {
              const acc_t impossible = ((s.bits[j] >> c) & 1) ? acc_t(0) : acc_t(1);
              ds[j] += s.mask[j] * impossible * gself[c] * std::exp(sc[j] - lself[c]);
            }
          }
          for (int64_t j = 0; j < len; ++j) dot[j] += ds[j] * sc[j];
        }
        // Normalisation backward: d f = inv * (d fhat - radial * fhat * (fhat . d fhat)), fhat . d fhat = dot.
        for (int64_t j = 0; j < len; ++j) dot[j] *= s.radial[j] * s.inv[j];
        for (int64_t d = 0; d < dim; ++d) {
          acc_t* __restrict__ row = s.suffix.data();
          std::fill(row, row + len, acc_t(0));
          for (int64_t c = 0; c < classes; ++c) {
            const acc_t w = pbar[c * dim + d];
            const acc_t* __restrict__ ds = s.aux.data() + c * kTile;
            for (int64_t j = 0; j < len; ++j) row[j] += w * ds[j];
          }
          const acc_t* __restrict__ f = s.feat.data() + d * kTile;
          scalar_t* __restrict__ dst = gout + (b * dim + d) * n + j0;
          for (int64_t j = 0; j < len; ++j) dst[j] = static_cast<scalar_t>((row[j] - dot[j] * f[j]) * s.inv[j]);
        }
        // d pbar_scaled[c][d] += sum_j ds_c(j) * fhat_d(j).
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ ds = s.aux.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) ds[j] *= s.inv[j];
          for (int64_t d = 0; d < dim; ++d) {
            const acc_t* __restrict__ f = s.feat.data() + d * kTile;
            acc_t acc = 0;
            for (int64_t j = 0; j < len; ++j) acc += ds[j] * f[j];
            gp[c * dim + d] += acc;
          }
        }
      }
    }
  });

  double* out = grad_pbar.data_ptr<double>();
  std::fill(out, out + classes * dim, 0.0);
  for (int64_t chunk = 0; chunk < tiling.num_chunks; ++chunk) {
    const acc_t* gp = chunk_grad.data() + chunk * classes * dim;
    for (int64_t i = 0; i < classes * dim; ++i) out[i] += static_cast<double>(gp[i]);
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& embeddings, const at::Tensor& prototypes,
                                               double temperature, const std::optional<at::Tensor>& allowed,
                                               const std::optional<at::Tensor>& valid) {
  const Problem p = make_problem(embeddings, prototypes, temperature, allowed, valid);
  at::Tensor logits = at::empty({p.batch, p.classes, p.pixels}, embeddings.options());
  at::Tensor log_z = at::empty({p.classes}, embeddings.options().dtype(p.acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, embeddings.scalar_type(), "prototype_logsumexp_cpu",
                                  [&] { forward_impl<scalar_t>(p, logits, log_z); });
  return {logits.view(p.logits_shape), log_z};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const std::optional<at::Tensor>& grad_logits,
                                                const std::optional<at::Tensor>& grad_log_z,
                                                const at::Tensor& embeddings, const at::Tensor& prototypes,
                                                double temperature, const std::optional<at::Tensor>& allowed,
                                                const std::optional<at::Tensor>& valid, const at::Tensor& log_z) {
  const Problem p = make_problem(embeddings, prototypes, temperature, allowed, valid);
  at::Tensor gl;
  if (grad_logits.has_value() && grad_logits->defined()) {
    TORCH_CHECK(grad_logits->sizes().vec() == p.logits_shape,
                "prototype_logsumexp_backward: grad_logits must have the logits' shape");
    gl = grad_logits->to(embeddings.scalar_type()).contiguous().view({p.batch, p.classes, p.pixels});
  }
  TORCH_CHECK(log_z.dim() == 1 && log_z.size(0) == p.classes,
              "prototype_logsumexp_backward: log_z must have shape (C,)");
  const BackwardConstants k = make_backward_constants(log_z, grad_log_z, p.acc_type, embeddings.device());
  at::Tensor grad_embeddings = at::empty_like(p.embeddings);
  at::Tensor grad_pbar = at::empty({p.classes, p.dim}, embeddings.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, embeddings.scalar_type(),
                                  "prototype_logsumexp_backward_cpu",
                                  [&] { backward_impl<scalar_t>(p, gl, k, grad_embeddings, grad_pbar); });
  return {grad_embeddings.view(embeddings.sizes()), prototypes_backward(prototypes, grad_pbar.to(p.acc_type),
                                                                          temperature)};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsp_monai, CPU, m) {
  m.impl("prototype_logsumexp", &forward_cpu);
  m.impl("prototype_logsumexp_backward", &backward_cpu);
}

}  // namespace prototype_lse
}  // namespace dsp_monai

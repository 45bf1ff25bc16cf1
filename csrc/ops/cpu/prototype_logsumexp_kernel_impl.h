// CPU kernels of prototype_logsumexp, written once and compiled per instruction set: this header is included by
// prototype_logsumexp_kernel.cpp (baseline x86-64 / any CPU) and prototype_logsumexp_kernel_avx2.cpp (AVX2 + FMA),
// each inside its own namespace DSP_CPU_ISA; the entry file picks one at run time.
//
// Pixels are processed in tiles of kTile consecutive pixels of one image, and every inner loop runs over the
// pixels (or channels) of a tile so that the compiler vectorises it. Tiles are grouped into chunks of
// kTilesPerChunk; each chunk writes its own partial sums (log Z with a running max shift; the prototypes'
// gradient), and the partials are combined in chunk order, so results are identical for any number of threads.
//
// The including file must include <ATen/ATen.h>, <ATen/Parallel.h>, <ATen/OpMathType.h>, <algorithm>, <cmath>,
// <cstring>, <limits>, <vector> and "ops/prototype_logsumexp.h" first, and define DSP_CPU_ISA.

namespace dsp_monai {
namespace prototype_lse {
namespace DSP_CPU_ISA {

constexpr int64_t kTile = 128;
constexpr int64_t kTilesPerChunk = 32;

// exp(x) in float to about 2 ulp (Cody-Waite reduction and the Cephes polynomial), 0 below -87.3; made of plain
// arithmetic so that loops calling it vectorise (the libm call does not). Inputs here are always <= 0.
inline float exp_vec(float x) {
  const float clamped = std::max(x, -87.33654f);
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.33654f ? 0.0f : p * scale;
}
inline double exp_vec(double x) { return std::exp(x); }

// 32-byte vectors (GCC/Clang vector extensions): one ymm register in the AVX2 build, two xmm in the baseline.
template <typename acc_t>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int lanes = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int lanes = 4;
};

template <typename V, typename T>
inline V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void store_vec(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// out[r][col] (+)= sum_i a[r * sr + i * si] * x[i * ldx + col] for the kRows rows from r and the 2 vectors of
// columns from col, the accumulators held in registers.
template <typename acc_t, bool kAccumulate, int64_t kRows>
inline void gemm_block(int64_t r, int64_t col, int64_t inner, const acc_t* __restrict__ a, int64_t sr, int64_t si,
                       const acc_t* __restrict__ x, int64_t ldx, acc_t* __restrict__ out, int64_t ldo) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::lanes;
  V acc[kRows][2];
  for (int64_t rr = 0; rr < kRows; ++rr) {
    for (int64_t w = 0; w < 2; ++w) {
      acc[rr][w] = kAccumulate ? load_vec<V>(out + (r + rr) * ldo + col + w * L) : V{};
    }
  }
  for (int64_t i = 0; i < inner; ++i) {
    const V x0 = load_vec<V>(x + i * ldx + col), x1 = load_vec<V>(x + i * ldx + col + L);
    for (int64_t rr = 0; rr < kRows; ++rr) {
      const acc_t coef = a[(r + rr) * sr + i * si];
      acc[rr][0] += x0 * coef;
      acc[rr][1] += x1 * coef;
    }
  }
  for (int64_t rr = 0; rr < kRows; ++rr) {
    for (int64_t w = 0; w < 2; ++w) store_vec(out + (r + rr) * ldo + col + w * L, acc[rr][w]);
  }
}

// out[r][col] (+)= sum_i a[r * sr + i * si] * x[i * ldx + col] for r < rows, col < cols: the small products of a
// tile, blocked as 4 rows x 2 vectors of columns so that the accumulators stay in registers and every loaded
// vector of x serves several rows, also for the last (rows % 4) rows.
template <typename acc_t, bool kAccumulate>
void small_gemm(int64_t rows, int64_t inner, int64_t cols, const acc_t* __restrict__ a, int64_t sr, int64_t si,
                const acc_t* __restrict__ x, int64_t ldx, acc_t* __restrict__ out, int64_t ldo) {
  constexpr int64_t L = Vec<acc_t>::lanes, kRows = 4;
  int64_t col = 0;
  for (; col + 2 * L <= cols; col += 2 * L) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) gemm_block<acc_t, kAccumulate, kRows>(r, col, inner, a, sr, si, x, ldx, out, ldo);
    switch (rows - r) {
      case 3: gemm_block<acc_t, kAccumulate, 3>(r, col, inner, a, sr, si, x, ldx, out, ldo); break;
      case 2: gemm_block<acc_t, kAccumulate, 2>(r, col, inner, a, sr, si, x, ldx, out, ldo); break;
      case 1: gemm_block<acc_t, kAccumulate, 1>(r, col, inner, a, sr, si, x, ldx, out, ldo); break;
      default: break;
    }
  }
  for (; col < cols; ++col) {
    for (int64_t r = 0; r < rows; ++r) {
      acc_t acc = kAccumulate ? out[r * ldo + col] : acc_t(0);
      for (int64_t i = 0; i < inner; ++i) acc += a[r * sr + i * si] * x[i * ldx + col];
      out[r * ldo + col] = acc;
    }
  }
}

// out[r][q] += sum_i a[r * lda + i] * b[q * ldb + i] for r < rows_a, q < rows_b: a contraction over the
// contiguous index, blocked as 2 x 4 vector accumulators that are summed across lanes at the end.
template <typename acc_t>
void small_gemm_nt(int64_t rows_a, int64_t rows_b, int64_t inner, const acc_t* __restrict__ a, int64_t lda,
                   const acc_t* __restrict__ b, int64_t ldb, acc_t* __restrict__ out, int64_t ldo) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::lanes, kA = 2, kB = 4;
  const int64_t vec_end = inner - inner % L;
  auto lane_sum = [](const V& v) {
    acc_t total = 0;
    for (int64_t l = 0; l < L; ++l) total += v[l];
    return total;
  };
  for (int64_t r0 = 0; r0 < rows_a; r0 += kA) {
    const int64_t na = std::min(kA, rows_a - r0);
    for (int64_t q0 = 0; q0 < rows_b; q0 += kB) {
      const int64_t nb = std::min(kB, rows_b - q0);
      if (na == kA && nb == kB) {
        V acc[kA][kB] = {};
        for (int64_t i = 0; i < vec_end; i += L) {
          V va[kA], vb[kB];
          for (int64_t x = 0; x < kA; ++x) va[x] = load_vec<V>(a + (r0 + x) * lda + i);
          for (int64_t y = 0; y < kB; ++y) vb[y] = load_vec<V>(b + (q0 + y) * ldb + i);
          for (int64_t x = 0; x < kA; ++x) {
            for (int64_t y = 0; y < kB; ++y) acc[x][y] += va[x] * vb[y];
          }
        }
        for (int64_t x = 0; x < kA; ++x) {
          for (int64_t y = 0; y < kB; ++y) {
            acc_t total = lane_sum(acc[x][y]);
            for (int64_t i = vec_end; i < inner; ++i) total += a[(r0 + x) * lda + i] * b[(q0 + y) * ldb + i];
            out[(r0 + x) * ldo + q0 + y] += total;
          }
        }
      } else {
        for (int64_t x = 0; x < na; ++x) {
          for (int64_t y = 0; y < nb; ++y) {
            V acc = {};
            for (int64_t i = 0; i < vec_end; i += L) {
              acc += load_vec<V>(a + (r0 + x) * lda + i) * load_vec<V>(b + (q0 + y) * ldb + i);
            }
            acc_t total = lane_sum(acc);
            for (int64_t i = vec_end; i < inner; ++i) total += a[(r0 + x) * lda + i] * b[(q0 + y) * ldb + i];
            out[(r0 + x) * ldo + q0 + y] += total;
          }
        }
      }
    }
  }
}

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

// Per-thread buffers, laid out [row][kTile].
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> feat, dfeat, score, aux, inv, radial, mask, suffix, dot;
  std::vector<int64_t> bits;
  Scratch(int64_t dim, int64_t classes)
      : feat(dim * kTile), dfeat(dim * kTile), score(classes * kTile), aux(classes * kTile), inv(kTile),
        radial(kTile), mask(kTile), suffix(kTile), dot(kTile), bits(kTile) {}
};

// Loads pixels [j0, j0 + len) of one image (emb: (D, N)) into feat[d][j], and computes inv[j] = 1 / max(|f_j|, eps)
// and radial[j] = 1 when |f_j| > eps (the normalisation is then a projection) else 0.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* emb, int64_t n, int64_t dim, int64_t j0, int64_t len, Scratch<acc_t>& s) {
  acc_t* __restrict__ sq = s.inv.data();
  std::fill(sq, sq + len, acc_t(0));
  for (int64_t d = 0; d < dim; ++d) {
    const scalar_t* __restrict__ src = emb + d * n + j0;
    acc_t* __restrict__ dst = s.feat.data() + d * kTile;
    for (int64_t j = 0; j < len; ++j) {
      const acc_t v = static_cast<acc_t>(src[j]);
      dst[j] = v;
      sq[j] += v * v;
    }
  }
  const acc_t eps = static_cast<acc_t>(kNormEps);
  acc_t* __restrict__ radial = s.radial.data();
  for (int64_t j = 0; j < len; ++j) {
    const acc_t norm = std::sqrt(sq[j]);
    radial[j] = norm > eps ? acc_t(1) : acc_t(0);
    sq[j] = acc_t(1) / std::max(norm, eps);
  }
}

// score[c][j] = inv[j] * sum_d pbar[c][d] * feat[d][j]: the logits s_c of the tile's pixels.
template <typename acc_t>
void tile_scores(const acc_t* pbar, int64_t classes, int64_t dim, int64_t len, Scratch<acc_t>& s) {
  small_gemm<acc_t, false>(classes, dim, len, pbar, dim, 1, s.feat.data(), kTile, s.score.data(), kTile);
  const acc_t* __restrict__ inv = s.inv.data();
  for (int64_t c = 0; c < classes; ++c) {
    acc_t* __restrict__ out = s.score.data() + c * kTile;
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

// impossible[j] = 1 where class c is not possible at pixel j (bit c of bits[j] clear), times the valid mask.
template <typename acc_t>
void impossible_mask(const Scratch<acc_t>& s, int64_t c, int64_t len, acc_t* __restrict__ out) {
  const int64_t* __restrict__ bits = s.bits.data();
  const acc_t* __restrict__ mask = s.mask.data();
  for (int64_t j = 0; j < len; ++j) out[j] = ((bits[j] >> c) & 1) ? acc_t(0) : mask[j];
}

// log Z_c of the classes in `which`, each with its own running maximum and the exponentials in double (no flush to
// zero): the slow, exact path for classes whose terms all lie far below the largest score. Sequential, so the result
// does not depend on the number of threads.
template <typename scalar_t>
void exact_log_z(const Problem& p, const std::vector<int64_t>& which, double* log_z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> top(which.size(), kNegInf), sum(which.size(), 0.0);
  Scratch<acc_t> s(dim, classes);
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  for (int64_t t = 0; t < tiling.num_tiles; ++t) {
    const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
    load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
    tile_scores<acc_t>(pbar, classes, dim, len, s);
    load_masks<acc_t>(p, b, j0, len, s);
    for (size_t w = 0; w < which.size(); ++w) {
      const int64_t c = which[w];
      for (int64_t j = 0; j < len; ++j) {
        if (s.mask[j] == acc_t(0)) continue;
        const bool c_possible = (s.bits[j] >> c) & 1;
        for (int64_t k = 0; k < classes; ++k) {
          if (k == c && c_possible) continue;
          const double x = static_cast<double>(s.score[k * kTile + j]);
          if (x > top[w]) {
            sum[w] = sum[w] * std::exp(top[w] - x) + 1.0;
            top[w] = x;
          } else {
            sum[w] += std::exp(x - top[w]);
          }
        }
      }
    }
  }
  for (size_t w = 0; w < which.size(); ++w) log_z[which[w]] = sum[w] > 0.0 ? top[w] + std::log(sum[w]) : kNegInf;
}

template <typename scalar_t>
void forward(const Problem& p, at::Tensor& logits, at::Tensor& log_z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> chunk_max(tiling.num_chunks, kNegInf);
  std::vector<double> chunk_sum(tiling.num_chunks * classes, 0.0);
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  scalar_t* out = logits.data_ptr<scalar_t>();

  at::parallel_for(0, tiling.num_chunks, 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> s(dim, classes);
    std::vector<acc_t> impossible(kTile);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double shift = kNegInf;
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
            tile_max = std::max(tile_max, s.mask[j] != acc_t(0) ? sc[j] : -std::numeric_limits<acc_t>::infinity());
          }
        }
        if (tile_max == -std::numeric_limits<acc_t>::infinity()) continue;  // no valid pixel
        if (static_cast<double>(tile_max) > shift) {
          const double rescale = std::exp(shift - static_cast<double>(tile_max));
          for (int64_t c = 0; c < classes; ++c) sums[c] *= rescale;
          shift = static_cast<double>(tile_max);
        }
        const acc_t shift_acc = static_cast<acc_t>(shift);
        // score <- e_c = exp(s_c - shift) on valid pixels (0 elsewhere); aux <- prefix sums sum_{k < c} e_k.
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ e = s.score.data() + c * kTile;
          const acc_t* __restrict__ mask = s.mask.data();
          for (int64_t j = 0; j < len; ++j) e[j] = mask[j] * exp_vec(std::min(e[j] - shift_acc, acc_t(0)));
        }
        std::fill(s.aux.begin(), s.aux.begin() + kTile, acc_t(0));
        for (int64_t c = 1; c < classes; ++c) {
          const acc_t* __restrict__ prev = s.aux.data() + (c - 1) * kTile;
          const acc_t* __restrict__ e = s.score.data() + (c - 1) * kTile;
          acc_t* __restrict__ cur = s.aux.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) cur[j] = prev[j] + e[j];
        }
        // Z_c terms: sum_{k != c} e_k (prefix + suffix, no cancellation) plus e_c where c is not possible.
        acc_t* __restrict__ suffix = s.suffix.data();
        std::fill(suffix, suffix + kTile, acc_t(0));
        for (int64_t c = classes - 1; c >= 0; --c) {
          const acc_t* __restrict__ e = s.score.data() + c * kTile;
          const acc_t* __restrict__ prefix = s.aux.data() + c * kTile;
          impossible_mask<acc_t>(s, c, len, impossible.data());
          acc_t acc = 0;
          for (int64_t j = 0; j < len; ++j) {
            acc += prefix[j] + suffix[j] + impossible[j] * e[j];
            suffix[j] += e[j];
          }
          sums[c] += static_cast<double>(acc);
        }
      }
      chunk_max[chunk] = shift;
    }
  });

  double shift = kNegInf;
  for (double m : chunk_max) shift = std::max(shift, m);
  std::vector<double> total(classes, 0.0);
  if (shift > kNegInf) {
    for (int64_t chunk = 0; chunk < tiling.num_chunks; ++chunk) {
      if (chunk_max[chunk] == kNegInf) continue;
      const double scale = std::exp(chunk_max[chunk] - shift);
      for (int64_t c = 0; c < classes; ++c) total[c] += chunk_sum[chunk * classes + c] * scale;
    }
  }
  at::Tensor result = at::empty({classes}, at::TensorOptions().dtype(at::kDouble));
  double* r = result.data_ptr<double>();
  for (int64_t c = 0; c < classes; ++c) r[c] = total[c] > 0.0 ? shift + std::log(total[c]) : kNegInf;
  // exp_vec flushes terms more than ~87 (float) below the shared shift to 0: a class that dominates every valid
  // pixel at a low temperature loses all its Z_c terms (log Z_c = -inf instead of a finite value). Such classes,
  // recognised by a total too small to be free of flushed terms, are recomputed with their own shift.
  const double floor_exp = std::is_same<acc_t, float>::value ? std::exp(-87.33654) : std::exp(-708.0);
  const double suspicious = static_cast<double>(p.batch * n * classes) * floor_exp /
                            static_cast<double>(std::numeric_limits<acc_t>::epsilon());
  std::vector<int64_t> redo;
  if (shift > kNegInf) {
    for (int64_t c = 0; c < classes; ++c) {
      if (total[c] < suspicious) redo.push_back(c);
    }
  }
  if (!redo.empty()) exact_log_z<scalar_t>(p, redo, r);
  log_z.copy_(result);
}

template <typename scalar_t>
void backward(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,
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
  // One exp per (class, pixel) where safe: gself * exp(s - lself) = exp(s - ell) * [gself * exp(ell - lself)].
  // Needs rho != 0 (then ell is a real bound, s <= ell) and a factor exp(ell - lself) far from over/underflow.
  std::vector<acc_t> coupled(classes, acc_t(0));
  std::vector<char> fused(classes, 0);
  for (int64_t c = 0; c < classes; ++c) {
    const double gap = static_cast<double>(ell[c]) - static_cast<double>(lself[c]);
    fused[c] = rho[c] != acc_t(0) && std::abs(gap) < 60.0;
    if (fused[c]) coupled[c] = static_cast<acc_t>(static_cast<double>(gself[c]) * std::exp(gap));
  }
  scalar_t* gout = grad_embeddings.data_ptr<scalar_t>();

  at::parallel_for(0, tiling.num_chunks, 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> s(dim, classes);
    std::vector<acc_t> impossible(kTile);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      acc_t* gp = chunk_grad.data() + chunk * classes * dim;
      const int64_t tile_end = std::min(tiling.num_tiles, (chunk + 1) * kTilesPerChunk);
      for (int64_t t = chunk * kTilesPerChunk; t < tile_end; ++t) {
        const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
        load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
        tile_scores<acc_t>(pbar, classes, dim, len, s);
        load_masks<acc_t>(p, b, j0, len, s);
        // aux[c][j] = d loss / d s_c(j); dot[j] = sum_c aux[c][j] * s_c(j) = fhat_j . d fhat_j.
        acc_t* __restrict__ dot = s.dot.data();
        std::fill(dot, dot + kTile, acc_t(0));
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t* __restrict__ sc = s.score.data() + c * kTile;
          const acc_t* __restrict__ mask = s.mask.data();
          acc_t* __restrict__ ds = s.aux.data() + c * kTile;
          if (gl != nullptr) {
            const scalar_t* __restrict__ g = gl + (b * classes + c) * n + j0;
            for (int64_t j = 0; j < len; ++j) ds[j] = static_cast<acc_t>(g[j]);
          } else {
            std::fill(ds, ds + len, acc_t(0));
          }
          const bool self = gself[c] != acc_t(0);
          if (self) impossible_mask<acc_t>(s, c, len, impossible.data());
          const acc_t* __restrict__ imp = impossible.data();
          const acc_t r = rho[c], l = ell[c], q = coupled[c], gs = gself[c], ls = lself[c];
          if (self && fused[c]) {
            for (int64_t j = 0; j < len; ++j) {
              ds[j] += exp_vec(std::min(sc[j] - l, acc_t(0))) * (mask[j] * r + imp[j] * q);
            }
          } else {
            if (r != acc_t(0)) {
              for (int64_t j = 0; j < len; ++j) ds[j] += mask[j] * r * exp_vec(std::min(sc[j] - l, acc_t(0)));
            }
            if (self) {
              for (int64_t j = 0; j < len; ++j) ds[j] += imp[j] * gs * exp_vec(std::min(sc[j] - ls, acc_t(0)));
            }
          }
          for (int64_t j = 0; j < len; ++j) dot[j] += ds[j] * sc[j];
        }
        // Normalisation backward: d f = inv * (d fhat - radial * fhat * (fhat . d fhat)).
        for (int64_t j = 0; j < len; ++j) dot[j] *= s.radial[j] * s.inv[j];
        // d fhat[d][j] = sum_c pbar[c][d] * ds_c(j).
        small_gemm<acc_t, false>(dim, classes, len, pbar, 1, dim, s.aux.data(), kTile, s.dfeat.data(), kTile);
        const acc_t* __restrict__ inv = s.inv.data();
        for (int64_t d = 0; d < dim; ++d) {
          const acc_t* __restrict__ row = s.dfeat.data() + d * kTile;
          const acc_t* __restrict__ f = s.feat.data() + d * kTile;
          scalar_t* __restrict__ dst = gout + (b * dim + d) * n + j0;
          for (int64_t j = 0; j < len; ++j) dst[j] = static_cast<scalar_t>((row[j] - dot[j] * f[j]) * inv[j]);
        }
        // d pbar_scaled[c][d] += sum_j (ds_c(j) * inv_j) * feat[d][j].
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ ds = s.aux.data() + c * kTile;
          for (int64_t j = 0; j < len; ++j) ds[j] *= inv[j];
        }
        small_gemm_nt<acc_t>(classes, dim, len, s.aux.data(), kTile, s.feat.data(), kTile, gp, dim);
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

// Entry points with fixed signatures, one pair per instruction set.
void forward_entry(const Problem& p, at::Tensor& logits, at::Tensor& log_z) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.embeddings.scalar_type(), "prototype_logsumexp_cpu",
                                  [&] { forward<scalar_t>(p, logits, log_z); });
}

void backward_entry(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,
                           at::Tensor& grad_embeddings, at::Tensor& grad_pbar) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.embeddings.scalar_type(),
                                  "prototype_logsumexp_backward_cpu",
                                  [&] { backward<scalar_t>(p, grad_logits, k, grad_embeddings, grad_pbar); });
}

}  // namespace DSP_CPU_ISA
}  // namespace prototype_lse
}  // namespace dsp_monai

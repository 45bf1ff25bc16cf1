// CPU kernels of prototype_logsumexp, written once and compiled per instruction set: this header is included by
// prototype_logsumexp_kernel.cpp (baseline x86-64 / any CPU, 16-byte vectors), prototype_logsumexp_kernel_avx2.cpp
// (AVX2 + FMA, 32-byte vectors) and prototype_logsumexp_kernel_avx512.cpp (AVX-512, 64-byte vectors, 32 vector
// registers), each inside its own namespace DSP_CPU_ISA; the entry file picks one at run time.
//
// Pixels are processed in tiles of kTile consecutive pixels of one image. A tile's embeddings are copied into a
// (D, kTile) scratch in the accumulation dtype, and the tile's matrix products run on register-blocked
// micro-kernels written with GCC vector types (one vector = DSP_VEC_BYTES bytes of pixels):
//   scores     S[c][j]  = inv_j sum_d P[c][d] f[d][j]          R classes x NV pixel vectors of accumulators
//   backward   dF[d][j] = sum_c P[c][d] dS[c][j]                R channels x NV pixel vectors, the embeddings'
//                                                                gradient formed and stored in the epilogue
//   backward   dP[c][d] += sum_j dS[c][j] f[d][j]               RC x RD blocks of per-lane partial sums, reduced
//                                                                across lanes once per chunk
// Tiles are grouped into chunks of kTilesPerChunk; each chunk writes its own partial sums (log Z with a running
// max shift; the prototypes' gradient), and the partials are combined in chunk order, so results are identical
// for any number of threads.
//
// The including file must include <ATen/ATen.h>, <ATen/Parallel.h>, <ATen/OpMathType.h>, <algorithm>, <cmath>,
// <cstdlib>, <cstring>, <limits>, <memory>, <type_traits>, <vector>, "ops/prototype_logsumexp.h" and, on x86-64,
// <immintrin.h> first, and
// define DSP_CPU_ISA, DSP_VEC_BYTES (16, 32 or 64) and DSP_VEC_REGS (16 or 32 vector registers).

namespace dsp_monai {
namespace prototype_lse {
namespace DSP_CPU_ISA {

constexpr int64_t kTile = 128;
constexpr int64_t kTilesPerChunk = 32;
constexpr int kVecBytes = DSP_VEC_BYTES;
constexpr bool kManyRegs = DSP_VEC_REGS >= 32;
// Micro-kernel shapes (accumulators in registers): scores and d fhat use R rows x NV pixel vectors; the prototypes'
// gradient uses kPR classes x kPD channels.
constexpr int kRows = 12;
constexpr int kNV = kManyRegs ? 2 : 1;
constexpr int kPR = kManyRegs ? 3 : 2;
constexpr int kPD = kManyRegs ? 8 : 6;

template <typename acc_t>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  typedef int32_t I __attribute__((vector_size(kVecBytes)));
  typedef uint32_t Word;
  static constexpr int W = kVecBytes / 4;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef uint64_t U __attribute__((vector_size(kVecBytes)));
  typedef int64_t I __attribute__((vector_size(kVecBytes)));
  typedef uint64_t Word;
  static constexpr int W = kVecBytes / 8;
};
static_assert(kTile % Simd<float>::W == 0 && kTile % Simd<double>::W == 0, "kTile must hold whole vectors");

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
template <typename V>
inline V splat(typename std::remove_reference<decltype(V{}[0])>::type x) {
  return V{} + x;
}

// exp(x) for x <= 0, lane by lane: float to about 2 ulp (Cody-Waite reduction and the Cephes polynomial), 0 below
// -87.3, in plain vector arithmetic; double through std::exp.
inline Simd<float>::V exp_nonpositive(Simd<float>::V x) {
  using V = Simd<float>::V;
  using I = Simd<float>::I;
  const V lo = splat<V>(-87.33654f);
  const V clamped = x < lo ? lo : x;
  const V n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const V r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  const V scale = (V)bits;  // same-size vector cast: the bits reinterpreted
  return x < lo ? V{} : p * scale;
}
inline Simd<double>::V exp_nonpositive(Simd<double>::V x) {
  Simd<double>::V out;
  for (int l = 0; l < Simd<double>::W; ++l) out[l] = std::exp(x[l]);
  return out;
}

template <typename V>
inline V vmin(V a, V b) {
  return a < b ? a : b;
}
template <typename V>
inline V vmax(V a, V b) {
  return a > b ? a : b;
}
// a where the bits of keep are set (keep lanes are all ones or all zeros).
template <typename acc_t>
inline typename Simd<acc_t>::V select_bits(typename Simd<acc_t>::V a, typename Simd<acc_t>::U keep) {
  using U = typename Simd<acc_t>::U;
  using V = typename Simd<acc_t>::V;
  return (V)((U)a & keep);
}

// A 64-byte aligned array (vector loads never straddle more cache lines than needed).
template <typename T>
struct Buffer {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data;
  explicit Buffer(int64_t count) {
    const size_t bytes = ((std::max<int64_t>(count, 1) * sizeof(T) + 63) / 64) * 64;
    data.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    TORCH_CHECK(data != nullptr, "prototype_logsumexp: could not allocate ", bytes, " bytes of CPU scratch");
    std::memset(static_cast<void*>(data.get()), 0, bytes);
  }
  T* get() const { return data.get(); }
};

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

// Per-thread buffers, laid out [row][kTile]. Pixels of a tile beyond its length are zero embeddings, invalid and
// have no possible class, so full vectors can always be processed.
template <typename acc_t>
struct Scratch {
  using Word = typename Simd<acc_t>::Word;
  static constexpr int kWords = 64 / (8 * sizeof(Word));
  int64_t dim, classes;
  Buffer<acc_t> feat, score, ds, inv, rinv, valid, work;
  Buffer<Word> bits;
  Scratch(int64_t dim_, int64_t classes_)
      : dim(dim_), classes(classes_), feat(dim_ * kTile), score(classes_ * kTile), ds(classes_ * kTile),
        inv(kTile), rinv(kTile), valid(kTile), work(3 * classes_ * Simd<acc_t>::W), bits(kWords * kTile) {}
};

// Copies pixels [j0, j0 + len) of one image (emb: (D, N)) into feat[d][j] (zeros beyond len) and computes
// inv[j] = 1 / max(|f_j|, eps) and rinv[j] = inv[j] where |f_j| > eps else 0 (the normalisation is then a
// projection whose backward removes the radial part).
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* emb, int64_t n, int64_t dim, int64_t j0, int64_t len, Scratch<acc_t>& s) {
  acc_t* __restrict__ sq = s.inv.get();
  std::fill(sq, sq + kTile, acc_t(0));
  // The next tile of the image continues every channel's row: prefetch it (the rows are D strided streams, more
  // than the hardware prefetchers follow).
  const bool prefetch = j0 + 2 * kTile <= n;
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t d = 0; d < dim; ++d) {
    const scalar_t* __restrict__ src = emb + d * n + j0;
    acc_t* __restrict__ dst = s.feat.get() + d * kTile;
    if (prefetch) {
      for (int64_t j = 0; j < kTile; j += kLine) __builtin_prefetch(src + kTile + j, 0, 3);
    }
    if (len == kTile) {
      for (int64_t j = 0; j < kTile; ++j) {
        const acc_t v = static_cast<acc_t>(src[j]);
        dst[j] = v;
        sq[j] += v * v;
      }
    } else {
      for (int64_t j = 0; j < len; ++j) {
        const acc_t v = static_cast<acc_t>(src[j]);
        dst[j] = v;
        sq[j] += v * v;
      }
      std::fill(dst + len, dst + kTile, acc_t(0));
    }
  }
  const acc_t eps = static_cast<acc_t>(kNormEps);
  acc_t* __restrict__ rinv = s.rinv.get();
  for (int64_t j = 0; j < kTile; ++j) {
    const acc_t norm = std::sqrt(sq[j]);
    const acc_t inv = acc_t(1) / std::max(norm, eps);
    sq[j] = inv;
    rinv[j] = norm > eps ? inv : acc_t(0);
  }
}

// valid[j] = 1 for valid pixels of the tile (0 beyond len) and the possible-class bits of every pixel split into
// words of the accumulation type's width (all ones when `allowed` is absent, zeros beyond len).
template <typename acc_t>
void load_masks(const Problem& p, int64_t b, int64_t j0, int64_t len, Scratch<acc_t>& s) {
  using Word = typename Simd<acc_t>::Word;
  constexpr int kWords = Scratch<acc_t>::kWords;
  const bool* valid = p.valid.defined() ? p.valid.data_ptr<bool>() + b * p.pixels + j0 : nullptr;
  const int64_t* allowed = p.allowed.defined() ? p.allowed.data_ptr<int64_t>() + b * p.pixels + j0 : nullptr;
  acc_t* __restrict__ mask = s.valid.get();
  Word* __restrict__ bits = s.bits.get();
  for (int64_t j = 0; j < kTile; ++j) {
    const bool inside = j < len;
    mask[j] = (inside && (valid == nullptr || valid[j])) ? acc_t(1) : acc_t(0);
    const uint64_t word = !inside ? 0 : (allowed == nullptr ? ~uint64_t(0) : static_cast<uint64_t>(allowed[j]));
    for (int w = 0; w < kWords; ++w) bits[w * kTile + j] = static_cast<Word>(word >> (w * 8 * sizeof(Word)));
  }
}

// All ones in the lanes where class c is NOT possible, zeros where it is.
template <typename acc_t>
inline typename Simd<acc_t>::U impossible_lanes(const Scratch<acc_t>& s, int64_t c, int64_t j) {
  using U = typename Simd<acc_t>::U;
  constexpr int kBits = 8 * sizeof(typename Simd<acc_t>::Word);
  const U word = load_vec<U>(s.bits.get() + (c / kBits) * kTile + j);
  return ((word >> static_cast<int>(c % kBits)) & 1) - 1;
}

// ---- micro-kernels ------------------------------------------------------------------------------------------------

// score[c][j] = inv[j] * sum_d pbar[c][d] feat[d][j] for the R classes from c0 and the NV pixel vectors from j.
template <typename acc_t, int R, int NV>
inline void score_block(const acc_t* __restrict__ pbar, int64_t c0, int64_t dim, int64_t j, Scratch<acc_t>& s) {
  using V = typename Simd<acc_t>::V;
  constexpr int W = Simd<acc_t>::W;
  V acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  }
  const acc_t* __restrict__ feat = s.feat.get() + j;
  const acc_t* __restrict__ rows = pbar + c0 * dim;
  for (int64_t d = 0; d < dim; ++d) {
    V f[NV];
    for (int v = 0; v < NV; ++v) f[v] = load_vec<V>(feat + d * kTile + v * W);
    for (int r = 0; r < R; ++r) {
      const acc_t coef = rows[r * dim + d];
      for (int v = 0; v < NV; ++v) acc[r][v] += f[v] * coef;
    }
  }
  for (int v = 0; v < NV; ++v) {
    const V inv = load_vec<V>(s.inv.get() + j + v * W);
    for (int r = 0; r < R; ++r) store_vec(s.score.get() + (c0 + r) * kTile + j + v * W, acc[r][v] * inv);
  }
}

// Runs `block<R>(row0)` over `rows` rows split into near-equal groups of at most kRows.
template <typename Block>
inline void for_row_groups(int64_t rows, const Block& block) {
  const int64_t groups = (rows + kRows - 1) / kRows;
  int64_t row0 = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t count = (rows - row0) / (groups - g);
    switch (count) {
#define DSP_ROW_CASE(n) \
  case n: block(std::integral_constant<int, n>(), row0); break;
      DSP_ROW_CASE(1) DSP_ROW_CASE(2) DSP_ROW_CASE(3) DSP_ROW_CASE(4) DSP_ROW_CASE(5) DSP_ROW_CASE(6)
      DSP_ROW_CASE(7) DSP_ROW_CASE(8) DSP_ROW_CASE(9) DSP_ROW_CASE(10) DSP_ROW_CASE(11) DSP_ROW_CASE(12)
#undef DSP_ROW_CASE
      default: break;
    }
    row0 += count;
  }
}
static_assert(kRows == 12, "for_row_groups has one case per row count up to kRows");

// The tile's scores into s.score (all kTile pixels).
template <typename acc_t>
void tile_scores(const acc_t* pbar, int64_t classes, int64_t dim, Scratch<acc_t>& s) {
  constexpr int64_t step = kNV * Simd<acc_t>::W;
  static_assert(kTile % step == 0, "kTile must hold whole micro-kernel blocks");
  for_row_groups(classes, [&](auto rows, int64_t c0) {
    for (int64_t j = 0; j < kTile; j += step) score_block<acc_t, decltype(rows)::value, kNV>(pbar, c0, dim, j, s);
  });
}

// Stores the first `count` lanes of v at dst, converted to scalar_t.
template <typename scalar_t, typename acc_t>
inline void store_lanes(scalar_t* dst, const typename Simd<acc_t>::V& v, int64_t count) {
  constexpr int W = Simd<acc_t>::W;
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    if (count >= W) {
      store_vec(dst, v);
      return;
    }
  }
  const int64_t lanes = std::min<int64_t>(count, W);
  for (int64_t l = 0; l < lanes; ++l) dst[l] = static_cast<scalar_t>(v[l]);
}

// Stores a full vector of float lanes past the caches (the embeddings' gradient is written once and read by
// nobody here): no read-for-ownership of the destination lines. Needs a vector-aligned destination; otherwise,
// and for other types, an ordinary store of the first `count` lanes.
template <typename scalar_t, typename acc_t>
inline void stream_lanes(scalar_t* dst, const typename Simd<acc_t>::V& v, int64_t count) {
#if defined(__x86_64__)
  if constexpr (std::is_same<scalar_t, float>::value && std::is_same<acc_t, float>::value) {
    if (count >= Simd<acc_t>::W && reinterpret_cast<uintptr_t>(dst) % kVecBytes == 0) {
#if DSP_VEC_BYTES == 64
      _mm512_stream_ps(dst, (__m512)v);
#elif DSP_VEC_BYTES == 32
      _mm256_stream_ps(dst, (__m256)v);
#else
      _mm_stream_ps(dst, (__m128)v);
#endif
      return;
    }
  }
#endif
  store_lanes<scalar_t, acc_t>(dst, v, count);
}

// Orders the streaming stores of this thread before the parallel region ends.
inline void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// grad[d][j0 + j] = (sum_c pbar[c][d] ds[c][j] - dot[j] feat[d][j]) * inv[j] for the R channels from d0 and the NV
// pixel vectors from j; `dot` holds (fhat . d fhat) * radial.
template <typename scalar_t, typename acc_t, int R, int NV>
inline void grad_block(const acc_t* __restrict__ pbar, int64_t classes, int64_t dim, int64_t d0, int64_t j,
                       int64_t len, const acc_t* __restrict__ dot, const Scratch<acc_t>& s, scalar_t* out, int64_t n) {
  using V = typename Simd<acc_t>::V;
  constexpr int W = Simd<acc_t>::W;
  V acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  }
  const acc_t* __restrict__ ds = s.ds.get() + j;
  for (int64_t c = 0; c < classes; ++c) {
    V g[NV];
    for (int v = 0; v < NV; ++v) g[v] = load_vec<V>(ds + c * kTile + v * W);
    const acc_t* __restrict__ row = pbar + c * dim + d0;
    for (int r = 0; r < R; ++r) {
      const acc_t coef = row[r];
      for (int v = 0; v < NV; ++v) acc[r][v] += g[v] * coef;
    }
  }
  for (int v = 0; v < NV; ++v) {
    const V inv = load_vec<V>(s.inv.get() + j + v * W);
    const V dt = load_vec<V>(dot + j + v * W);
    for (int r = 0; r < R; ++r) {
      const V f = load_vec<V>(s.feat.get() + (d0 + r) * kTile + j + v * W);
      stream_lanes<scalar_t, acc_t>(out + (d0 + r) * n + j + v * W, (acc[r][v] - dt * f) * inv, len - j - v * W);
    }
  }
}

// gp[c][d][lane] += sum over the tile's pixel vectors of ds[c][j] * feat[d][j], for RC classes from c0 and RD
// channels from d0 (gp: per-lane partial sums, (C, D, W)).
template <typename acc_t, int RC, int RD>
inline void prototype_grad_block(int64_t c0, int64_t d0, int64_t dim, const Scratch<acc_t>& s, acc_t* gp) {
  using V = typename Simd<acc_t>::V;
  constexpr int W = Simd<acc_t>::W;
  V acc[RC][RD];
  for (int x = 0; x < RC; ++x) {
    for (int y = 0; y < RD; ++y) acc[x][y] = load_vec<V>(gp + ((c0 + x) * dim + d0 + y) * W);
  }
  for (int64_t j = 0; j < kTile; j += W) {
    V a[RC];
    for (int x = 0; x < RC; ++x) a[x] = load_vec<V>(s.ds.get() + (c0 + x) * kTile + j);
    for (int y = 0; y < RD; ++y) {
      const V f = load_vec<V>(s.feat.get() + (d0 + y) * kTile + j);
      for (int x = 0; x < RC; ++x) acc[x][y] += a[x] * f;
    }
  }
  for (int x = 0; x < RC; ++x) {
    for (int y = 0; y < RD; ++y) store_vec(gp + ((c0 + x) * dim + d0 + y) * W, acc[x][y]);
  }
}

// The same for any block size up to kPR x kPD (edges of the class and channel ranges).
template <typename acc_t>
inline void prototype_grad_edge(int64_t c0, int64_t rc, int64_t d0, int64_t rd, int64_t dim, const Scratch<acc_t>& s,
                                acc_t* gp) {
  using V = typename Simd<acc_t>::V;
  constexpr int W = Simd<acc_t>::W;
  for (int64_t x = 0; x < rc; ++x) {
    for (int64_t y = 0; y < rd; ++y) {
      acc_t* out = gp + ((c0 + x) * dim + d0 + y) * W;
      V acc = load_vec<V>(out);
      for (int64_t j = 0; j < kTile; j += W) {
        acc += load_vec<V>(s.ds.get() + (c0 + x) * kTile + j) * load_vec<V>(s.feat.get() + (d0 + y) * kTile + j);
      }
      store_vec(out, acc);
    }
  }
}

template <typename acc_t>
void tile_prototype_grad(int64_t classes, int64_t dim, const Scratch<acc_t>& s, acc_t* gp) {
  for (int64_t c0 = 0; c0 < classes; c0 += kPR) {
    const int64_t rc = std::min<int64_t>(kPR, classes - c0);
    for (int64_t d0 = 0; d0 < dim; d0 += kPD) {
      const int64_t rd = std::min<int64_t>(kPD, dim - d0);
      if (rc == kPR && rd == kPD) {
        prototype_grad_block<acc_t, kPR, kPD>(c0, d0, dim, s, gp);
      } else {
        prototype_grad_edge<acc_t>(c0, rc, d0, rd, dim, s, gp);
      }
    }
  }
}

// ---- forward --------------------------------------------------------------------------------------------------------

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
  constexpr int kBits = 8 * sizeof(typename Scratch<acc_t>::Word);
  const acc_t* valid = s.valid.get();
  const acc_t* score = s.score.get();
  const auto* bits = s.bits.get();
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  for (int64_t t = 0; t < tiling.num_tiles; ++t) {
    const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
    load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
    tile_scores<acc_t>(pbar, classes, dim, s);
    load_masks<acc_t>(p, b, j0, len, s);
    for (size_t w = 0; w < which.size(); ++w) {
      const int64_t c = which[w];
      for (int64_t j = 0; j < len; ++j) {
        if (valid[j] == acc_t(0)) continue;
        const bool c_possible = (bits[(c / kBits) * kTile + j] >> (c % kBits)) & 1;
        for (int64_t k = 0; k < classes; ++k) {
          if (k == c && c_possible) continue;
          const double x = static_cast<double>(score[k * kTile + j]);
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
  using V = typename Simd<acc_t>::V;
  using U = typename Simd<acc_t>::U;
  constexpr int W = Simd<acc_t>::W;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  constexpr acc_t kAccNegInf = -std::numeric_limits<acc_t>::infinity();
  std::vector<double> chunk_max(tiling.num_chunks, kNegInf);
  std::vector<double> chunk_sum(tiling.num_chunks * classes, 0.0);
  const scalar_t* emb = p.embeddings.data_ptr<scalar_t>();
  const acc_t* pbar = p.pbar_scaled.data_ptr<acc_t>();
  scalar_t* out = logits.data_ptr<scalar_t>();

  at::parallel_for(0, tiling.num_chunks, 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> s(dim, classes);
    Buffer<double> lane_sums(classes * W);  // per-lane Z partials of the chunk, relative to `shift`
    V* e = reinterpret_cast<V*>(s.work.get());  // e_c of one pixel vector, then the prefix sums, then Z terms
    V* prefix = e + classes;
    V* terms = prefix + classes;
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double shift = kNegInf;
      std::fill(lane_sums.get(), lane_sums.get() + classes * W, 0.0);
      const int64_t tile_end = std::min(tiling.num_tiles, (chunk + 1) * kTilesPerChunk);
      for (int64_t t = chunk * kTilesPerChunk; t < tile_end; ++t) {
        const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
        load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
        tile_scores<acc_t>(pbar, classes, dim, s);
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t* __restrict__ src = s.score.get() + c * kTile;
          scalar_t* __restrict__ dst = out + (b * classes + c) * n + j0;
          for (int64_t j = 0; j < len; ++j) dst[j] = static_cast<scalar_t>(src[j]);
        }
        load_masks<acc_t>(p, b, j0, len, s);
        // Largest valid score of the tile: the shift that keeps every exp() <= 1.
        V vmax_score = splat<V>(kAccNegInf);
        for (int64_t j = 0; j < kTile; j += W) {
          const V valid = load_vec<V>(s.valid.get() + j);
          for (int64_t c = 0; c < classes; ++c) {
            const V sc = load_vec<V>(s.score.get() + c * kTile + j);
            vmax_score = valid != V{} ? vmax(vmax_score, sc) : vmax_score;
          }
        }
        acc_t tile_max = kAccNegInf;
        for (int l = 0; l < W; ++l) tile_max = std::max(tile_max, vmax_score[l]);
        if (tile_max == kAccNegInf) continue;  // no valid pixel
        if (static_cast<double>(tile_max) > shift) {
          const double rescale = std::exp(shift - static_cast<double>(tile_max));
          for (int64_t i = 0; i < classes * W; ++i) lane_sums.get()[i] *= rescale;
          shift = static_cast<double>(tile_max);
        }
        const acc_t shift_acc = static_cast<acc_t>(shift);
        for (int64_t c = 0; c < classes; ++c) terms[c] = V{};
        for (int64_t j = 0; j < kTile; j += W) {
          // e_c = exp(s_c - shift) on valid pixels (0 elsewhere); Z_c terms: sum_{k != c} e_k as prefix + suffix
          // (no cancellation of a dominant class) plus e_c where c is not possible.
          const U valid = (U)(load_vec<V>(s.valid.get() + j) != V{});
          V running = V{};
          for (int64_t c = 0; c < classes; ++c) {
            const V sc = load_vec<V>(s.score.get() + c * kTile + j);
            e[c] = select_bits<acc_t>(exp_nonpositive(vmin(sc - shift_acc, V{})), valid);
            prefix[c] = running;
            running += e[c];
          }
          V suffix = V{};
          for (int64_t c = classes - 1; c >= 0; --c) {
            terms[c] += prefix[c] + suffix + select_bits<acc_t>(e[c], impossible_lanes(s, c, j));
            suffix += e[c];
          }
        }
        for (int64_t c = 0; c < classes; ++c) {
          double* lanes = lane_sums.get() + c * W;
          for (int l = 0; l < W; ++l) lanes[l] += static_cast<double>(terms[c][l]);
        }
      }
      chunk_max[chunk] = shift;
      for (int64_t c = 0; c < classes; ++c) {
        double total = 0.0;
        for (int l = 0; l < W; ++l) total += lane_sums.get()[c * W + l];
        chunk_sum[chunk * classes + c] = total;
      }
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
  // exp_nonpositive flushes terms more than ~87 (float) below the shared shift to 0: a class that dominates every valid
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

// ---- backward -------------------------------------------------------------------------------------------------------

template <typename scalar_t>
void backward(const Problem& p, const at::Tensor& grad_logits, const BackwardConstants& k,
              at::Tensor& grad_embeddings, at::Tensor& grad_pbar) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = typename Simd<acc_t>::V;
  constexpr int W = Simd<acc_t>::W;
  const int64_t classes = p.classes, dim = p.dim, n = p.pixels;
  const Tiling tiling(p.batch, n);
  std::vector<double> chunk_grad(tiling.num_chunks * classes * dim, 0.0);
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
    Buffer<acc_t> gp(classes * dim * W);  // per-lane partial sums of d pbar_scaled over the chunk
    Buffer<acc_t> dot_buf(kTile);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      std::fill(gp.get(), gp.get() + classes * dim * W, acc_t(0));
      const int64_t tile_end = std::min(tiling.num_tiles, (chunk + 1) * kTilesPerChunk);
      for (int64_t t = chunk * kTilesPerChunk; t < tile_end; ++t) {
        const int64_t b = tiling.image(t), j0 = tiling.start(t), len = tiling.length(t);
        load_tile<scalar_t, acc_t>(emb + b * dim * n, n, dim, j0, len, s);
        tile_scores<acc_t>(pbar, classes, dim, s);
        load_masks<acc_t>(p, b, j0, len, s);
        // ds[c][j] = d loss / d s_c(j): the incoming logits gradient (zeros beyond len) plus the log Z terms.
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ ds = s.ds.get() + c * kTile;
          if (gl != nullptr) {
            const scalar_t* __restrict__ g = gl + (b * classes + c) * n + j0;
            for (int64_t j = 0; j < len; ++j) ds[j] = static_cast<acc_t>(g[j]);
            std::fill(ds + len, ds + kTile, acc_t(0));
          } else {
            std::fill(ds, ds + kTile, acc_t(0));
          }
        }
        acc_t* __restrict__ dot = dot_buf.get();
        for (int64_t j = 0; j < kTile; j += W) {
          const V mask = load_vec<V>(s.valid.get() + j);
          V dt = V{};
          for (int64_t c = 0; c < classes; ++c) {
            const V sc = load_vec<V>(s.score.get() + c * kTile + j);
            V ds = load_vec<V>(s.ds.get() + c * kTile + j);
            const acc_t r = rho[c], l = ell[c], q = coupled[c], gs = gself[c], ls = lself[c];
            const bool self = gs != acc_t(0);
            if (self && fused[c]) {
              const V imp = select_bits<acc_t>(mask, impossible_lanes(s, c, j));
              ds += exp_nonpositive(vmin(sc - l, V{})) * (mask * r + imp * q);
            } else {
              if (r != acc_t(0)) ds += mask * r * exp_nonpositive(vmin(sc - l, V{}));
              if (self) {
                const V imp = select_bits<acc_t>(mask, impossible_lanes(s, c, j));
                ds += imp * gs * exp_nonpositive(vmin(sc - ls, V{}));
              }
            }
            store_vec(s.ds.get() + c * kTile + j, ds);
            dt += ds * sc;
          }
          // Normalisation backward: d f = inv * (d fhat - radial * fhat * (fhat . d fhat)), fhat = f * inv.
          const V rinv = load_vec<V>(s.rinv.get() + j);
          store_vec(dot + j, dt * rinv);
        }
        constexpr int64_t step = kNV * W;
        scalar_t* grad_image = gout + b * dim * n + j0;
        for_row_groups(dim, [&](auto rows, int64_t d0) {
          for (int64_t j = 0; j < kTile && j < len; j += step) {
            grad_block<scalar_t, acc_t, decltype(rows)::value, kNV>(pbar, classes, dim, d0, j, len, dot, s,
                                                                    grad_image, n);
          }
        });
        // d pbar_scaled[c][d] += sum_j (ds_c(j) * inv_j) * feat[d][j].
        for (int64_t c = 0; c < classes; ++c) {
          acc_t* __restrict__ ds = s.ds.get() + c * kTile;
          const acc_t* __restrict__ inv = s.inv.get();
          for (int64_t j = 0; j < kTile; ++j) ds[j] *= inv[j];
        }
        tile_prototype_grad<acc_t>(classes, dim, s, gp.get());
      }
      double* out = chunk_grad.data() + chunk * classes * dim;
      for (int64_t i = 0; i < classes * dim; ++i) {
        double total = 0.0;
        for (int l = 0; l < W; ++l) total += static_cast<double>(gp.get()[i * W + l]);
        out[i] = total;
      }
    }
    stream_fence();
  });

  double* out = grad_pbar.data_ptr<double>();
  std::fill(out, out + classes * dim, 0.0);
  for (int64_t chunk = 0; chunk < tiling.num_chunks; ++chunk) {
    const double* gp = chunk_grad.data() + chunk * classes * dim;
    for (int64_t i = 0; i < classes * dim; ++i) out[i] += gp[i];
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

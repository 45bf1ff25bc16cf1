// CUDA kernels of prototype_logsumexp (forward and backward).
//
// Forward: one thread per pixel computes the C scores (registers), writes the logits, and the block reduces its
// pixels' Z_c terms with the block's largest score as shift into one partial per block; a second kernel combines
// the partials in a fixed order (deterministic). Backward: one thread per pixel recomputes the scores, forms
// d loss / d s, and writes the embeddings' gradient; the block's embeddings and d loss / d s are staged in shared
// memory to reduce the prototypes' gradient per block, and the per-block partials are summed in a fixed order.
// No (B, C*K, *spatial) similarities and no (C, C, pixels) weights are ever formed.
#include <cmath>
#include <limits>
#include <type_traits>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/prototype_logsumexp.h"

namespace dsp_monai {
namespace prototype_lse {
namespace {

constexpr int kThreads = 256;       // forward block: one pixel per thread
constexpr int kBwdThreads = 128;    // backward block: one pixel per thread, staged in shared memory
constexpr int kPitch = kBwdThreads + 1;  // shared-memory row pitch (no bank conflicts on row or column reads)
constexpr int kWarp = 32;

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dev_sqrt(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Scores of one pixel: s[c] = inv * sum_d pbar[c][d] * f_d, with f_d read at f[d * n]; also returns inv and
// whether |f| > eps. `stage`, when not null, receives f_d at stage[d * kPitch] (zeros for idle threads).
template <typename scalar_t, typename acc_t, int CMAX>
__device__ __forceinline__ void pixel_scores(const scalar_t* __restrict__ f, int64_t n, int dim, int classes,
                                             const acc_t* __restrict__ pbar, bool active, acc_t (&s)[CMAX],
                                             acc_t& inv, acc_t& radial, acc_t* stage) {
#pragma unroll
  for (int c = 0; c < CMAX; ++c) s[c] = acc_t(0);
  acc_t sq = 0;
  for (int d = 0; d < dim; ++d) {
    const acc_t v = active ? static_cast<acc_t>(f[static_cast<int64_t>(d) * n]) : acc_t(0);
    if (stage != nullptr) stage[d * kPitch] = v;
    sq += v * v;
#pragma unroll
    for (int c = 0; c < CMAX; ++c) {
      if (c < classes) s[c] += v * __ldg(pbar + c * dim + d);
    }
  }
  const acc_t eps = static_cast<acc_t>(kNormEps);
  const acc_t norm = dev_sqrt(sq);
  radial = norm > eps ? acc_t(1) : acc_t(0);
  inv = acc_t(1) / max(norm, eps);
#pragma unroll
  for (int c = 0; c < CMAX; ++c) s[c] *= inv;
}

template <typename scalar_t, typename acc_t, int CMAX>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ emb, const acc_t* __restrict__ pbar,
                   const int64_t* __restrict__ allowed, const bool* __restrict__ valid, scalar_t* __restrict__ logits,
                   acc_t* __restrict__ block_max, acc_t* __restrict__ block_sum, int64_t total, int64_t n, int dim,
                   int classes) {
  __shared__ acc_t warp_part[(kThreads / kWarp) * CMAX];
  __shared__ acc_t shift_shared;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = p < total;
  const int64_t b = active ? p / n : 0, j = active ? p - b * n : 0;

  acc_t s[CMAX];
  acc_t inv, radial;
  pixel_scores<scalar_t, acc_t, CMAX>(emb + b * dim * n + j, n, dim, classes, pbar, active, s, inv, radial, nullptr);
  if (active) {
#pragma unroll
    for (int c = 0; c < CMAX; ++c) {
      if (c < classes) logits[(b * classes + c) * n + j] = static_cast<scalar_t>(s[c]);
    }
  }
  const bool counts = active && (valid == nullptr || valid[p]);
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  if (counts) {
#pragma unroll
    for (int c = 0; c < CMAX; ++c) {
      if (c < classes) m = max(m, s[c]);
    }
  }
  m = warp_max(m);
  if (lane == 0) warp_part[warp] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t best = warp_part[0];
    for (int w = 1; w < kThreads / kWarp; ++w) best = max(best, warp_part[w]);
    shift_shared = best;
  }
  __syncthreads();
  const acc_t shift = shift_shared;
  if (shift == -std::numeric_limits<acc_t>::infinity()) {  // no valid pixel in this block (block-uniform)
    if (threadIdx.x == 0) block_max[blockIdx.x] = shift;
    if (threadIdx.x < classes) block_sum[static_cast<int64_t>(blockIdx.x) * classes + threadIdx.x] = acc_t(0);
    return;
  }
  const int64_t bits = (allowed != nullptr && active) ? allowed[p] : int64_t(-1);
  acc_t prefix[CMAX];
  acc_t running = 0;
#pragma unroll
  for (int c = 0; c < CMAX; ++c) {
    if (c < classes) {
      s[c] = counts ? dev_exp(s[c] - shift) : acc_t(0);
      prefix[c] = running;
      running += s[c];
    }
  }
  __syncthreads();  // warp_part is reused below
  acc_t suffix = 0;
#pragma unroll
  for (int c = CMAX - 1; c >= 0; --c) {
    if (c < classes) {
      const acc_t others = prefix[c] + suffix;
      acc_t term = ((bits >> c) & 1) ? others : others + s[c];
      suffix += s[c];
      term = warp_sum(term);
      if (lane == 0) warp_part[warp * CMAX + c] = term;
    }
  }
  __syncthreads();
  if (threadIdx.x < classes) {
    acc_t sum = 0;
    for (int w = 0; w < kThreads / kWarp; ++w) sum += warp_part[w * CMAX + threadIdx.x];
    block_sum[static_cast<int64_t>(blockIdx.x) * classes + threadIdx.x] = sum;
  }
  if (threadIdx.x == 0) block_max[blockIdx.x] = shift;
}

// log Z_c from the per-block partials: one block per class, fixed-order reductions in double.
template <typename acc_t, typename out_t>
__global__ void __launch_bounds__(kThreads)
    finalize_log_z_kernel(const acc_t* __restrict__ block_max, const acc_t* __restrict__ block_sum,
                          int64_t num_blocks, int classes, out_t* __restrict__ log_z) {
  __shared__ double part[kThreads];
  const int c = blockIdx.x;
  double m = -INFINITY;
  for (int64_t i = threadIdx.x; i < num_blocks; i += kThreads) m = fmax(m, static_cast<double>(block_max[i]));
  part[threadIdx.x] = m;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) part[threadIdx.x] = fmax(part[threadIdx.x], part[threadIdx.x + stride]);
    __syncthreads();
  }
  const double shift = part[0];
  __syncthreads();
  double sum = 0.0;
  if (shift != -INFINITY) {
    for (int64_t i = threadIdx.x; i < num_blocks; i += kThreads) {
      const double bm = static_cast<double>(block_max[i]);
      if (bm != -INFINITY) sum += static_cast<double>(block_sum[i * classes + c]) * exp(bm - shift);
    }
  }
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    log_z[c] = part[0] > 0.0 ? static_cast<out_t>(shift + log(part[0])) : static_cast<out_t>(-INFINITY);
  }
}

template <typename scalar_t, typename acc_t, int CMAX>
__global__ void __launch_bounds__(kBwdThreads)
    backward_kernel(const scalar_t* __restrict__ emb, const scalar_t* __restrict__ grad_logits,
                    const acc_t* __restrict__ pbar, const int64_t* __restrict__ allowed,
                    const bool* __restrict__ valid, const acc_t* __restrict__ ell, const acc_t* __restrict__ rho,
                    const acc_t* __restrict__ gself, const acc_t* __restrict__ lself,
                    scalar_t* __restrict__ grad_emb, acc_t* __restrict__ grad_partial, int64_t total, int64_t n,
                    int dim, int classes) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* stage_f = reinterpret_cast<acc_t*>(smem_raw);  // [dim][kPitch]: the block's embeddings
  acc_t* stage_ds = stage_f + dim * kPitch;              // [classes][kPitch]: d loss / d s, times inv
  const int t = threadIdx.x;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kBwdThreads + t;
  const bool active = p < total;
  const int64_t b = active ? p / n : 0, j = active ? p - b * n : 0;

  acc_t s[CMAX];
  acc_t inv, radial;
  pixel_scores<scalar_t, acc_t, CMAX>(emb + b * dim * n + j, n, dim, classes, pbar, active, s, inv, radial,
                                      stage_f + t);
  const bool counts = active && (valid == nullptr || valid[p]);
  const int64_t bits = (allowed != nullptr && active) ? allowed[p] : int64_t(-1);
  acc_t ds[CMAX];
  acc_t dot = 0;
#pragma unroll
  for (int c = 0; c < CMAX; ++c) {
    if (c < classes) {
      acc_t g = (active && grad_logits != nullptr) ? static_cast<acc_t>(grad_logits[(b * classes + c) * n + j])
                                                   : acc_t(0);
      if (counts) {
        const acc_t r = __ldg(rho + c), gs = __ldg(gself + c);
        if (r != acc_t(0)) g += r * dev_exp(s[c] - __ldg(ell + c));
        if (gs != acc_t(0) && !((bits >> c) & 1)) g += gs * dev_exp(s[c] - __ldg(lself + c));
      }
      ds[c] = g;
      dot += g * s[c];
    }
  }
  const acc_t projection = radial * inv * dot;
  if (active) {
    for (int d = 0; d < dim; ++d) {
      acc_t row = 0;
#pragma unroll
      for (int c = 0; c < CMAX; ++c) {
        if (c < classes) row += __ldg(pbar + c * dim + d) * ds[c];
      }
      const acc_t fd = stage_f[d * kPitch + t];
      grad_emb[(b * dim + d) * n + j] = static_cast<scalar_t>((row - projection * fd) * inv);
    }
  }
#pragma unroll
  for (int c = 0; c < CMAX; ++c) {
    if (c < classes) stage_ds[c * kPitch + t] = active ? ds[c] * inv : acc_t(0);
  }
  __syncthreads();
  const int entries = classes * dim;
  acc_t* out = grad_partial + static_cast<int64_t>(blockIdx.x) * entries;
  for (int e = t; e < entries; e += kBwdThreads) {
    const int c = e / dim, d = e - c * dim;
    const acc_t* row_ds = stage_ds + c * kPitch;
    const acc_t* row_f = stage_f + d * kPitch;
    acc_t acc = 0;
    for (int q = 0; q < kBwdThreads; ++q) acc += row_ds[q] * row_f[q];
    out[e] = acc;
  }
}

// out[col] (+)= sum over rows of in[row][col], rows split into gridDim.y slices; fixed order, so deterministic.
template <typename in_t>
__global__ void column_sum_kernel(const in_t* __restrict__ in, int64_t rows, int64_t cols,
                                  double* __restrict__ out) {
  __shared__ double part[8][kWarp];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x;
  const int64_t per_slice = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t first = blockIdx.y * per_slice;
  const int64_t last = min(rows, first + per_slice);
  double acc = 0.0;
  if (col < cols) {
    for (int64_t r = first + threadIdx.y; r < last; r += 8) acc += static_cast<double>(in[r * cols + col]);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    double sum = 0.0;
    for (int i = 0; i < 8; ++i) sum += part[i][threadIdx.x];
    out[static_cast<int64_t>(blockIdx.y) * cols + col] = sum;
  }
}

// Deterministic sum over the rows of a (rows, cols) buffer into a (cols,) double tensor.
template <typename in_t>
at::Tensor column_sum(const at::Tensor& in, int64_t rows, int64_t cols, cudaStream_t stream) {
  const auto opts = in.options().dtype(at::kDouble);
  if (rows == 0) return at::zeros({cols}, opts);
  const int64_t slices = std::min<int64_t>(rows, 256);
  at::Tensor stage = at::empty({slices, cols}, opts);
  const dim3 block(kWarp, 8);
  column_sum_kernel<in_t><<<dim3((cols + kWarp - 1) / kWarp, slices), block, 0, stream>>>(
      in.data_ptr<in_t>(), rows, cols, stage.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor out = at::empty({cols}, opts);
  column_sum_kernel<double><<<dim3((cols + kWarp - 1) / kWarp, 1), block, 0, stream>>>(
      stage.data_ptr<double>(), slices, cols, out.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// Calls f with std::integral_constant<int, CMAX>, CMAX the smallest of 4, 8, 16, 32, 64 holding `classes`.
template <typename F>
void dispatch_classes(int64_t classes, F&& f) {
  if (classes <= 4) {
    f(std::integral_constant<int, 4>{});
  } else if (classes <= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (classes <= 16) {
    f(std::integral_constant<int, 16>{});
  } else if (classes <= 32) {
    f(std::integral_constant<int, 32>{});
  } else {
    f(std::integral_constant<int, 64>{});
  }
}

template <typename T>
const T* optional_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& embeddings, const at::Tensor& prototypes,
                                                double temperature, const std::optional<at::Tensor>& allowed,
                                                const std::optional<at::Tensor>& valid) {
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const Problem p = make_problem(embeddings, prototypes, temperature, allowed, valid);
  at::Tensor logits = at::empty({p.batch, p.classes, p.pixels}, embeddings.options());
  at::Tensor log_z = at::empty({p.classes}, embeddings.options().dtype(p.acc_type));
  const int64_t total = p.batch * p.pixels;
  const int64_t num_blocks = (total + kThreads - 1) / kThreads;
  TORCH_CHECK(num_blocks < (int64_t(1) << 31), "prototype_logsumexp: too many pixels for one launch (", total, ")");
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, embeddings.scalar_type(), "prototype_logsumexp_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor block_max = at::empty({num_blocks}, embeddings.options().dtype(p.acc_type));
    at::Tensor block_sum = at::empty({num_blocks, p.classes}, embeddings.options().dtype(p.acc_type));
    if (num_blocks > 0) {
      dispatch_classes(p.classes, [&](auto cmax) {
        constexpr int CMAX = decltype(cmax)::value;
        forward_kernel<scalar_t, acc_t, CMAX><<<static_cast<unsigned>(num_blocks), kThreads, 0, stream>>>(
            p.embeddings.data_ptr<scalar_t>(), p.pbar_scaled.data_ptr<acc_t>(), optional_ptr<int64_t>(p.allowed),
            optional_ptr<bool>(p.valid), logits.data_ptr<scalar_t>(), block_max.data_ptr<acc_t>(),
            block_sum.data_ptr<acc_t>(), total, p.pixels, static_cast<int>(p.dim), static_cast<int>(p.classes));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    finalize_log_z_kernel<acc_t, acc_t><<<static_cast<unsigned>(p.classes), kThreads, 0, stream>>>(
        block_max.data_ptr<acc_t>(), block_sum.data_ptr<acc_t>(), num_blocks, static_cast<int>(p.classes),
        log_z.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {logits.view(p.logits_shape), log_z};
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const std::optional<at::Tensor>& grad_logits,
                                                 const std::optional<at::Tensor>& grad_log_z,
                                                 const at::Tensor& embeddings, const at::Tensor& prototypes,
                                                 double temperature, const std::optional<at::Tensor>& allowed,
                                                 const std::optional<at::Tensor>& valid, const at::Tensor& log_z) {
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const BackwardProblem backward =
      make_backward_problem(grad_logits, grad_log_z, embeddings, prototypes, temperature, allowed, valid, log_z);
  const Problem& p = backward.problem;
  const at::Tensor& gl = backward.grad_logits;
  const BackwardConstants& k = backward.constants;
  at::Tensor grad_embeddings = at::empty_like(p.embeddings);
  const int64_t total = p.batch * p.pixels;
  const int64_t num_blocks = (total + kBwdThreads - 1) / kBwdThreads;
  TORCH_CHECK(num_blocks < (int64_t(1) << 31), "prototype_logsumexp: too many pixels for one launch (", total, ")");
  const int64_t entries = p.classes * p.dim;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_pbar;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, embeddings.scalar_type(), "prototype_logsumexp_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        at::Tensor partial = at::empty({num_blocks, entries}, embeddings.options().dtype(p.acc_type));
        if (num_blocks > 0) {
          const size_t smem = static_cast<size_t>(p.dim + p.classes) * kPitch * sizeof(acc_t);
          int device_limit = 0;
          C10_CUDA_CHECK(cudaDeviceGetAttribute(&device_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                                embeddings.get_device()));
          TORCH_CHECK(smem <= static_cast<size_t>(device_limit), "prototype_logsumexp: embeddings has D=", p.dim,
                      " channels; the CUDA backward needs ", smem, " bytes of shared memory per block for D + C = ",
                      p.dim + p.classes, " but the device offers ", device_limit,
                      "; use fewer embedding channels (D <= 256 fits every supported GPU)");
          dispatch_classes(p.classes, [&](auto cmax) {
            constexpr int CMAX = decltype(cmax)::value;
            auto kernel = backward_kernel<scalar_t, acc_t, CMAX>;
            C10_CUDA_CHECK(
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
            kernel<<<static_cast<unsigned>(num_blocks), kBwdThreads, smem, stream>>>(
                p.embeddings.data_ptr<scalar_t>(), gl.defined() ? gl.data_ptr<scalar_t>() : nullptr,
                p.pbar_scaled.data_ptr<acc_t>(), optional_ptr<int64_t>(p.allowed), optional_ptr<bool>(p.valid),
                k.ell.data_ptr<acc_t>(), k.rho.data_ptr<acc_t>(), k.gself.data_ptr<acc_t>(),
                k.lself.data_ptr<acc_t>(), grad_embeddings.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), total,
                p.pixels, static_cast<int>(p.dim), static_cast<int>(p.classes));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        }
        grad_pbar = column_sum<acc_t>(partial, num_blocks, entries, stream).view({p.classes, p.dim});
      });
  return {grad_embeddings.view(embeddings.sizes()),
          prototypes_backward(prototypes, grad_pbar.to(p.acc_type), temperature)};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsp_monai, CUDA, m) {
  m.impl("prototype_logsumexp", &forward_cuda);
  m.impl("prototype_logsumexp_backward", &backward_cuda);
}

}  // namespace prototype_lse
}  // namespace dsp_monai

// geodesic_distance / euclidean_distance: distance maps from seed points (docs/ops.md §2).
//
// This header holds what the CPU and CUDA kernels share: the argument checks, the description of the grid and
// of its neighbourhood, and the per-pixel maths as __host__ __device__ functions, so that both backends compute
// every edge cost and every parabola with the same floating-point operations in the same order (no fused
// multiply-add), and therefore the same bits.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#if defined(__CUDACC__)
#define DSP_HOST_DEVICE __host__ __device__
#else
#define DSP_HOST_DEVICE
#endif

namespace dsp_monai {
namespace geodesic {

// 8 neighbours in 2D, 26 in 3D.
constexpr int kMaxNeighbours = 26;

// A 2D problem is stored as a 3D one with depth 1; size/stride index 0 is z (depth), 1 is y, 2 is x.
struct Geometry {
  int dims = 2;                 // spatial dims of the input, 2 or 3
  int64_t size[3] = {1, 1, 1};  // (D, H, W), D = 1 in 2D
  int64_t stride[3] = {0, 0, 1};
  int64_t pixels = 0;  // D * H * W
};

// The neighbours of a pixel, in a fixed order: for 3D the 27 offsets (dz, dy, dx) in {-1, 0, 1}^3 in row-major
// order without (0, 0, 0); for 2D the 9 offsets (0, dy, dx) likewise without (0, 0, 0). step[k] is the spatial
// part of the edge cost, (1 - lamb) * |offset_k|_spacing, rounded once to float on the host.
struct Neighbourhood {
  int count = 0;
  int8_t offset[kMaxNeighbours][3] = {};
  float step[kMaxNeighbours] = {};
  float lamb = 1.0f;
};

// Argument checks; each raises a c10::Error naming the op, the argument, what was expected and what arrived.
// The Python fake registrations (dsp_monai/ops/geodesic_distance.py) mirror these messages.
void check_geodesic_arguments(const at::Tensor& image, const at::Tensor& seeds,
                              const std::optional<at::ArrayRef<double>>& spacing, double lamb,
                              const std::optional<int64_t>& iterations);
void check_euclidean_arguments(const at::Tensor& seeds, const std::optional<at::ArrayRef<double>>& spacing);

// Geometry of the spatial dims of a (B, S, *spatial) tensor.
Geometry make_geometry(const at::Tensor& seeds);

// Spacing per stored axis (z, y, x), 1 for the z axis of a 2D problem.
std::vector<double> spacing_zyx(const Geometry& geometry, const std::optional<at::ArrayRef<double>>& spacing);

Neighbourhood make_neighbourhood(const Geometry& geometry, const std::vector<double>& spacing, double lamb);

// ---------------------------------------------------------------------------------------------------------------
// Per-pixel maths shared by the CPU and CUDA kernels.

DSP_HOST_DEVICE inline float infinity_f() { return std::numeric_limits<float>::infinity(); }

// fl(a * b) and fl(a + b), never contracted into a fused multiply-add (nvcc contracts by default; the host
// compiler does not for the baseline x86-64 / aarch64 targets this is built for), so both backends round alike.
DSP_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

DSP_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// |I(p) - I(q)|: the Euclidean norm over channels of the change of intensity between two pixels whose channels
// are stored contiguously. Symmetric in p and q, bit for bit.
DSP_HOST_DEVICE inline float intensity_change(const float* p, const float* q, int64_t channels) {
  if (channels == 1) return std::fabs(q[0] - p[0]);
  float sum = 0.0f;
  for (int64_t c = 0; c < channels; ++c) {
    const float diff = q[c] - p[c];
    sum = add_rn(sum, mul_rn(diff, diff));
  }
  return std::sqrt(sum);
}

// Cost of the step between two neighbours: (1 - lamb) * |p - q|_spacing + lamb * |I(p) - I(q)|, where
// `step` already holds the first term.
DSP_HOST_DEVICE inline float edge_cost(float step, float lamb, float change) { return add_rn(step, mul_rn(lamb, change)); }

// One pixel of a directional pass (the approximate mode, `iterations` given): the smallest of the pixel's own
// distance and, over its neighbours in the previous plane along `axis` (those whose offset along `axis` is
// -direction), their distance plus the edge cost. `dist` and `image` point at the map and at its image
// (channels last); (z, y, x) is the pixel.
DSP_HOST_DEVICE inline float pull_from_previous_plane(const float* dist, const float* image, int64_t channels,
                                                      const Geometry& g, const Neighbourhood& nb, int axis,
                                                      int direction, int64_t z, int64_t y, int64_t x) {
  const int64_t p = z * g.stride[0] + y * g.stride[1] + x * g.stride[2];
  float best = dist[p];
  const float* ip = image + p * channels;
  const int64_t coord[3] = {z, y, x};
  for (int k = 0; k < nb.count; ++k) {
    if (nb.offset[k][axis] != -direction) continue;
    int64_t q = 0;
    bool inside = true;
    for (int a = 0; a < 3; ++a) {
      const int64_t c = coord[a] + nb.offset[k][a];
      inside = inside && c >= 0 && c < g.size[a];
      q += c * g.stride[a];
    }
    if (!inside) continue;
    const float candidate = add_rn(dist[q], edge_cost(nb.step[k], nb.lamb, intensity_change(ip, image + q * channels,
                                                                                              channels)));
    if (candidate < best) best = candidate;
  }
  return best;
}

// Position (in samples) where the parabolas h2 * (x - r)^2 + fr and h2 * (x - q)^2 + fq cross, r < q.
DSP_HOST_DEVICE inline double parabola_crossing(int64_t r, double fr, int64_t q, double fq, double h2) {
  const double rd = static_cast<double>(r), qd = static_cast<double>(q);
  return ((fq + h2 * qd * qd) - (fr + h2 * rd * rd)) / (2.0 * h2 * (qd - rd));
}

// Exact 1D squared distance transform of one line (Felzenszwalb & Huttenlocher, "Distance transforms of sampled
// functions", 2012): out[x] = min_q h2 * (x - q)^2 + f[q], over the samples q with a finite f[q]; +inf when there
// is none. h2 is the squared spacing along the line; with take_sqrt the square root is written instead.
// f, out and the scratch v (room for n indices) are strided; f and out must not overlap.
DSP_HOST_DEVICE inline void envelope_line(int64_t n, double h2, const float* f, int64_t f_stride, float* out,
                                          int64_t out_stride, bool take_sqrt, int32_t* v, int64_t v_stride) {
  // Lower envelope: v[0..k] are the parabolas that appear in it, left to right; the boundary between v[j-1] and
  // v[j] is their crossing, recomputed when needed instead of stored.
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    const float fq = f[q * f_stride];
    if (!(fq < infinity_f())) continue;
    while (k > 0) {
      const int64_t top = v[k * v_stride], below = v[(k - 1) * v_stride];
      const double s_new = parabola_crossing(top, f[top * f_stride], q, fq, h2);
      const double s_top = parabola_crossing(below, f[below * f_stride], top, f[top * f_stride], h2);
      if (s_new > s_top) break;
      --k;
    }
    ++k;
    v[k * v_stride] = static_cast<int32_t>(q);
  }
  if (k < 0) {
    for (int64_t x = 0; x < n; ++x) out[x * out_stride] = infinity_f();
    return;
  }
  int64_t j = 0;
  int64_t site = v[0];
  double boundary = std::numeric_limits<double>::infinity();
  if (k > 0) boundary = parabola_crossing(site, f[site * f_stride], v[v_stride], f[v[v_stride] * f_stride], h2);
  for (int64_t x = 0; x < n; ++x) {
    while (j < k && boundary < static_cast<double>(x)) {
      ++j;
      site = v[j * v_stride];
      if (j < k) {
        const int64_t next = v[(j + 1) * v_stride];
        boundary = parabola_crossing(site, f[site * f_stride], next, f[next * f_stride], h2);
      }
    }
    const double dx = static_cast<double>(x - site);
    const double value = h2 * dx * dx + static_cast<double>(f[site * f_stride]);
    out[x * out_stride] = static_cast<float>(take_sqrt ? std::sqrt(value) : value);
  }
}

// Offset of the first sample of line `line` (0 <= line < pixels / size[axis]) of a map, for lines along `axis`.
DSP_HOST_DEVICE inline int64_t line_start(const Geometry& g, int axis, int64_t line) {
  const int64_t stride = g.stride[axis];
  return (line / stride) * stride * g.size[axis] + line % stride;
}

}  // namespace geodesic
}  // namespace dsp_monai

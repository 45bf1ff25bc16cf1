// CPU kernels of geodesic_distance and euclidean_distance.
//
// Exact geodesic maps (iterations = None): label-correcting shortest paths on the 8/26-connected grid with a
// monotone radix heap keyed by the float distance, i.e. Dijkstra's algorithm. The maps (B * S of them) are
// independent tasks for at::parallel_for; when there are fewer maps than threads, each map is also cut into slabs
// along its outermost axis: every slab is solved from its own seeds in parallel, posting the relaxations that
// cross into a neighbouring slab, and then every map is finished by one more solver run over the whole map from
// the posted crossings (a small part of the map: the pixels closer to another slab's seeds). Any processing order
// that ends with no edge left to relax gives the same distances, bit for bit (each is the smallest float path
// sum), so the result does not depend on the number of threads or slabs.
//
// Approximate geodesic maps (iterations = k): k rounds of directional passes (see pull_from_previous_plane),
// parallel over the maps; identical to the CUDA kernel's passes.
//
// Euclidean maps: the separable exact transform of Felzenszwalb & Huttenlocher, one pass per axis, parallel over
// the lines of all maps.
#include <algorithm>
#include <array>
#if __cplusplus >= 202002L
#include <bit>
#endif
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/geodesic_distance.h"

namespace {
// Leading / trailing zero counts of a non-zero unsigned word (C++20 <bit> where available, else the GCC builtins,
// so the file also builds with the C++17 of older torch releases).
template <typename T>
inline int leading_zeros(T x) {
#if __cplusplus >= 202002L
  return std::countl_zero(x);
#else
  return sizeof(T) == 8 ? __builtin_clzll(static_cast<unsigned long long>(x))
                        : __builtin_clz(static_cast<unsigned int>(x));
#endif
}
template <typename T>
inline int trailing_zeros(T x) {
#if __cplusplus >= 202002L
  return std::countr_zero(x);
#else
  return sizeof(T) == 8 ? __builtin_ctzll(static_cast<unsigned long long>(x))
                        : __builtin_ctz(static_cast<unsigned int>(x));
#endif
}
}  // namespace

namespace dsp_monai {
namespace geodesic {
namespace {

using Key = uint64_t;

inline uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

inline float bits_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Monotone priority queue on (non-negative float distance, pixel index) entries: a radix heap (Ahuja, Mehlhorn,
// Orlin and Tarjan 1990) over the IEEE bit patterns of the distances, which order like the values. Pushed
// distances must not be below the last popped one (true in Dijkstra's algorithm with non-negative costs).
// Entries superseded by a smaller distance of their pixel are dropped when their bucket is redistributed.
class RadixQueue {
 public:
  void push(float value, uint32_t index) {
    const uint32_t bits = float_bits(value);
    const int b = bucket_of(bits);
    buckets_[b].push_back((static_cast<Key>(bits) << 32) | index);
    nonempty_ |= uint64_t{1} << b;
  }

  // Pops an entry with the smallest distance into `out`; false when the queue is empty.
  bool pop(const float* dist, Key& out) {
    for (;;) {
      std::vector<Key>& front = buckets_[0];
      if (!front.empty()) {
        out = front.back();
        front.pop_back();
        return true;
      }
      nonempty_ &= ~uint64_t{1};
      if (nonempty_ == 0) return false;
      const int b = trailing_zeros(nonempty_);
      std::vector<Key>& bucket = buckets_[b];
      nonempty_ &= ~(uint64_t{1} << b);
      size_t kept = 0;
      Key smallest = ~Key{0};
      for (const Key key : bucket) {
        if (bits_float(static_cast<uint32_t>(key >> 32)) > dist[static_cast<uint32_t>(key)]) continue;
        bucket[kept++] = key;
        smallest = std::min(smallest, key);
      }
      if (kept == 0) {
        bucket.clear();
        continue;
      }
      last_ = static_cast<uint32_t>(smallest >> 32);
      for (size_t i = 0; i < kept; ++i) {
        const Key key = bucket[i];
        const int target = bucket_of(static_cast<uint32_t>(key >> 32));
        buckets_[target].push_back(key);
        nonempty_ |= uint64_t{1} << target;
      }
      bucket.clear();
    }
  }

  void reset() {
    for (auto& bucket : buckets_) bucket.clear();
    nonempty_ = 0;
    last_ = 0;
  }

 private:
  int bucket_of(uint32_t bits) const { return bits == last_ ? 0 : 32 - leading_zeros(bits ^ last_); }

  std::array<std::vector<Key>, 33> buckets_;
  uint64_t nonempty_ = 0;
  uint32_t last_ = 0;
};

// A relaxation that crosses into a neighbouring slab: pixel index (padded layout) and candidate distance.
struct Crossing {
  uint32_t index;
  float value;
};

// The maps in the padded layout of the exact solver: every spatial axis of the input gets one pixel of padding on
// each side whose distance stays 0, so no relaxation ever enters it and the inner loop needs no bounds checks.
struct PaddedGrid {
  int outer_axis = 1;  // z in 3D, y in 2D: the axis cut into slabs
  int64_t size[3] = {1, 1, 1};
  int64_t stride[3] = {0, 0, 1};
  int64_t pixels = 0;
  int64_t offset[kMaxNeighbours] = {};

  PaddedGrid(const Geometry& g, const Neighbourhood& nb) {
    outer_axis = g.dims == 3 ? 0 : 1;
    for (int a = 0; a < 3; ++a) size[a] = g.size[a] + (a >= 3 - g.dims ? 2 : 0);
    stride[2] = 1;
    stride[1] = size[2];
    stride[0] = size[1] * size[2];
    pixels = size[0] * size[1] * size[2];
    for (int k = 0; k < nb.count; ++k) {
      offset[k] = nb.offset[k][0] * stride[0] + nb.offset[k][1] * stride[1] + nb.offset[k][2] * stride[2];
    }
  }
};

// One slab of one map: padded planes [plane_lo, plane_hi) along the outer axis, of which it owns the pixels.
struct Slab {
  int64_t map = 0;
  int64_t plane_lo = 0, plane_hi = 0;
  bool has_low = false, has_high = false;  // neighbouring slabs below / above
};

template <int K, bool kSingleChannel>
class SlabSolver {
 public:
  SlabSolver(const PaddedGrid& grid, const Neighbourhood& nb, int64_t channels)
      : grid_(grid), nb_(nb), channels_(kSingleChannel ? 1 : channels) {
    for (int k = 0; k < K; ++k) {
      offset_[k] = grid.offset[k];
      step_[k] = nb.step[k];
    }
  }

  // Runs label-correcting relaxations from the queued pixels until the queue is empty. Relaxations that leave
  // the slab are appended to to_low / to_high.
  void run(float* dist, const float* image, const Slab& slab, RadixQueue& queue, std::vector<Crossing>& to_low,
           std::vector<Crossing>& to_high) const {
    const int64_t plane = grid_.stride[grid_.outer_axis];
    const int64_t lo = slab.plane_lo * plane, hi = slab.plane_hi * plane;
    // Pixels in [inner_lo, inner_hi) have all their neighbours in the slab or in the padding.
    const int64_t inner_lo = slab.has_low ? lo + plane : lo;
    const int64_t inner_hi = slab.has_high ? hi - plane : hi;
    const float lamb = nb_.lamb;
    Key key;
    while (queue.pop(dist, key)) {
      const uint32_t p = static_cast<uint32_t>(key);
      const float dp = bits_float(static_cast<uint32_t>(key >> 32));
      if (dp > dist[p]) continue;
      const float* ip = image + static_cast<int64_t>(p) * channels_;
      if (p >= inner_lo && p < inner_hi) {
#pragma GCC unroll 26
        for (int k = 0; k < K; ++k) {
          const int64_t q = p + offset_[k];
          const float nd = add_rn(dp, edge_cost(step_[k], lamb, intensity_change(ip, image + q * channels_, channels_)));
          if (nd < dist[q]) {
            dist[q] = nd;
            queue.push(nd, static_cast<uint32_t>(q));
          }
        }
      } else {
        for (int k = 0; k < K; ++k) {
          const int64_t q = p + offset_[k];
          const float nd = add_rn(dp, edge_cost(step_[k], lamb, intensity_change(ip, image + q * channels_, channels_)));
          if (q < lo) {
            if (slab.has_low) to_low.push_back({static_cast<uint32_t>(q), nd});
          } else if (q >= hi) {
            if (slab.has_high) to_high.push_back({static_cast<uint32_t>(q), nd});
          } else if (nd < dist[q]) {
            dist[q] = nd;
            queue.push(nd, static_cast<uint32_t>(q));
          }
        }
      }
    }
  }

 private:
  const PaddedGrid& grid_;
  const Neighbourhood& nb_;
  const int64_t channels_;
  int64_t offset_[K];
  float step_[K];
};

// Writes the initial distances of a slab's planes (0 at seeds and in the padding, +inf elsewhere) and queues its
// seeds. The first and last slab of a map also write the padding planes at the ends of the outer axis.
void init_slab(float* dist, const bool* seeds, const Geometry& g, const PaddedGrid& grid, const Slab& slab,
               RadixQueue& queue) {
  const int outer = grid.outer_axis;
  const int64_t plane = grid.stride[outer];
  const int64_t first = slab.has_low ? slab.plane_lo : 0;
  const int64_t last = slab.has_high ? slab.plane_hi : grid.size[outer];
  std::fill(dist + first * plane, dist + slab.plane_lo * plane, 0.0f);
  std::fill(dist + slab.plane_hi * plane, dist + last * plane, 0.0f);
  for (int64_t i = slab.plane_lo; i < slab.plane_hi; ++i) {
    float* plane_dist = dist + i * plane;
    std::fill(plane_dist, plane_dist + plane, 0.0f);
    // The image rows of padded plane i: rows 1..H of a z plane in 3D, the plane itself (row y = i - 1) in 2D.
    const int64_t rows_lo = outer == 0 ? 1 : 0, rows_hi = outer == 0 ? grid.size[1] - 1 : 1;
    for (int64_t r = rows_lo; r < rows_hi; ++r) {
      const int64_t z = outer == 0 ? i - 1 : 0;
      const int64_t y = outer == 0 ? r - 1 : i - 1;
      const bool* seed_row = seeds + z * g.stride[0] + y * g.stride[1];
      float* drow = plane_dist + (outer == 0 ? r * grid.stride[1] : 0) + 1;
      for (int64_t x = 0; x < g.size[2]; ++x) {
        if (seed_row[x]) {
          drow[x] = 0.0f;
          queue.push(0.0f, static_cast<uint32_t>(drow + x - dist));
        } else {
          drow[x] = infinity_f();
        }
      }
    }
  }
}

// Copies the distances of a slab's interior pixels to the unpadded output map.
void copy_slab(const float* dist, float* out, const Geometry& g, const PaddedGrid& grid, const Slab& slab) {
  const int outer = grid.outer_axis;
  const int64_t plane = grid.stride[outer];
  for (int64_t i = slab.plane_lo; i < slab.plane_hi; ++i) {
    const int64_t rows_lo = outer == 0 ? 1 : 0, rows_hi = outer == 0 ? grid.size[1] - 1 : 1;
    for (int64_t r = rows_lo; r < rows_hi; ++r) {
      const int64_t z = outer == 0 ? i - 1 : 0;
      const int64_t y = outer == 0 ? r - 1 : i - 1;
      const float* src = dist + i * plane + (outer == 0 ? r * grid.stride[1] : 0) + 1;
      std::copy(src, src + g.size[2], out + z * g.stride[0] + y * g.stride[1]);
    }
  }
}

// Number of slabs per map: one when there are at least as many maps as threads; otherwise enough to give every
// thread work, with slabs of at least kMinSlabPixels pixels and kMinSlabPlanes planes.
constexpr int64_t kMinSlabPixels = 1 << 15;
constexpr int64_t kMinSlabPlanes = 4;

int64_t slabs_per_map(int64_t maps, const Geometry& g, const PaddedGrid& grid) {
  const int64_t threads = at::get_num_threads();
  if (maps >= threads) return 1;
  const int64_t by_planes = g.size[grid.outer_axis] / kMinSlabPlanes;
  const int64_t by_pixels = g.pixels / kMinSlabPixels;
  const int64_t wanted = (threads + maps - 1) / maps;
  return std::max<int64_t>(1, std::min({wanted, by_planes, by_pixels}));
}

template <int K, bool kSingleChannel>
void exact_geodesic(const at::Tensor& image_padded, const at::Tensor& seeds, at::Tensor& out, const Geometry& g,
                    const Neighbourhood& nb) {
  const PaddedGrid grid(g, nb);
  const int64_t batch = seeds.size(0), per_image = seeds.size(1), maps = batch * per_image;
  const int64_t channels = image_padded.size(-1);
  at::Tensor work = at::empty({maps, grid.pixels}, out.options());
  float* dist_all = work.data_ptr<float>();
  const float* image_all = image_padded.data_ptr<float>();
  const bool* seeds_all = seeds.data_ptr<bool>();
  float* out_all = out.data_ptr<float>();

  const int64_t per_map = slabs_per_map(maps, g, grid);
  const int outer = grid.outer_axis;
  const int64_t planes = g.size[outer];
  std::vector<Slab> slabs(maps * per_map);
  for (int64_t m = 0; m < maps; ++m) {
    for (int64_t s = 0; s < per_map; ++s) {
      Slab& slab = slabs[m * per_map + s];
      slab.map = m;
      slab.plane_lo = 1 + planes * s / per_map;
      slab.plane_hi = 1 + planes * (s + 1) / per_map;
      slab.has_low = s > 0;
      slab.has_high = s + 1 < per_map;
    }
  }
  const int64_t tasks = static_cast<int64_t>(slabs.size());
  // Crossings posted by each slab to its lower / upper neighbour.
  std::vector<std::vector<Crossing>> posted_low(tasks), posted_high(tasks);
  const SlabSolver<K, kSingleChannel> solver(grid, nb, channels);
  const auto copy_map = [&](int64_t m) {
    for (int64_t t = m * per_map; t < (m + 1) * per_map; ++t) {
      copy_slab(dist_all + m * grid.pixels, out_all + m * g.pixels, g, grid, slabs[t]);
    }
  };

  // Every slab from its own seeds, in parallel. With one slab per map the maps are then exact.
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    RadixQueue queue;
    for (int64_t t = begin; t < end; ++t) {
      const Slab& slab = slabs[t];
      queue.reset();
      init_slab(dist_all + slab.map * grid.pixels, seeds_all + slab.map * g.pixels, g, grid, slab, queue);
      solver.run(dist_all + slab.map * grid.pixels, image_all + (slab.map / per_image) * grid.pixels * channels,
                 slab, queue, posted_low[t], posted_high[t]);
      if (per_map == 1) copy_map(slab.map);
    }
  });
  if (per_map == 1) return;

  // Each map as a single slab, from the crossings its slabs posted: one pass finishes it, where rounds of
  // exchanges between slabs would need one parallel region per crossing of a winding path.
  Slab whole;
  whole.plane_lo = 1;
  whole.plane_hi = planes + 1;
  at::parallel_for(0, maps, 1, [&](int64_t begin, int64_t end) {
    RadixQueue queue;
    std::vector<Crossing> unused_low, unused_high;
    for (int64_t m = begin; m < end; ++m) {
      float* dist = dist_all + m * grid.pixels;
      queue.reset();
      for (int64_t t = m * per_map; t < (m + 1) * per_map; ++t) {
        for (const auto* posted : {&posted_low[t], &posted_high[t]}) {
          for (const Crossing& c : *posted) {
            if (c.value < dist[c.index]) {
              dist[c.index] = c.value;
              queue.push(c.value, c.index);
            }
          }
        }
      }
      solver.run(dist, image_all + (m / per_image) * grid.pixels * channels, whole, queue, unused_low, unused_high);
      copy_map(m);
    }
  });
}

// Directional passes (the approximate mode): per map, up to `iterations` rounds of a forward and a backward pass
// along each spatial axis, outermost first; stops early after a round that changed nothing.
void approximate_geodesic(const at::Tensor& image_cl, const at::Tensor& seeds, at::Tensor& out, const Geometry& g,
                          const Neighbourhood& nb, int64_t iterations) {
  const int64_t per_image = seeds.size(1), maps = seeds.size(0) * per_image;
  const int64_t channels = image_cl.size(-1);
  const float* image_all = image_cl.data_ptr<float>();
  const bool* seeds_all = seeds.data_ptr<bool>();
  float* out_all = out.data_ptr<float>();
  at::parallel_for(0, maps, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      float* dist = out_all + m * g.pixels;
      const bool* seed = seeds_all + m * g.pixels;
      const float* image = image_all + (m / per_image) * g.pixels * channels;
      for (int64_t p = 0; p < g.pixels; ++p) dist[p] = seed[p] ? 0.0f : infinity_f();
      for (int64_t it = 0; it < iterations; ++it) {
        bool changed = false;
        for (int axis = 3 - g.dims; axis < 3; ++axis) {
          const int other_a = axis == 0 ? 1 : 0, other_b = axis == 2 ? 1 : 2;
          for (int direction = 1; direction >= -1; direction -= 2) {
            const int64_t n = g.size[axis];
            for (int64_t step = 1; step < n; ++step) {
              const int64_t i = direction > 0 ? step : n - 1 - step;
              int64_t coord[3];
              coord[axis] = i;
              for (int64_t a = 0; a < g.size[other_a]; ++a) {
                coord[other_a] = a;
                for (int64_t b = 0; b < g.size[other_b]; ++b) {
                  coord[other_b] = b;
                  const float value = pull_from_previous_plane(dist, image, channels, g, nb, axis, direction,
                                                               coord[0], coord[1], coord[2]);
                  float& slot = dist[coord[0] * g.stride[0] + coord[1] * g.stride[1] + coord[2] * g.stride[2]];
                  if (value < slot) {
                    slot = value;
                    changed = true;
                  }
                }
              }
            }
          }
        }
        if (!changed) break;
      }
    }
  });
}

// The image as float32, channels last: (B, *spatial, C), with one pixel of zero padding around every spatial
// axis when `padded`.
at::Tensor channels_last_image(const at::Tensor& image, bool padded) {
  at::Tensor x = image.to(at::kFloat);
  if (padded) {
    std::vector<int64_t> pad(2 * (image.dim() - 2), 1);
    x = at::constant_pad_nd(x, pad, 0.0);
  }
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < image.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return x.permute(order).contiguous();
}

at::Tensor geodesic_distance_cpu(const at::Tensor& image, const at::Tensor& seeds,
                                 std::optional<at::ArrayRef<double>> spacing, double lamb,
                                 std::optional<int64_t> iterations) {
  check_geodesic_arguments(image, seeds, spacing, lamb, iterations);
  at::Tensor out = at::empty(seeds.sizes(), seeds.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const Geometry g = make_geometry(seeds);
  const Neighbourhood nb = make_neighbourhood(g, spacing_zyx(g, spacing), lamb);
  const at::Tensor seeds_c = seeds.contiguous();
  if (iterations.has_value()) {
    approximate_geodesic(channels_last_image(image, false), seeds_c, out, g, nb, *iterations);
    return out;
  }
  const at::Tensor image_padded = channels_last_image(image, true);
  const int64_t padded_pixels = image_padded.numel() / (image.size(0) * image.size(1));
  TORCH_CHECK(padded_pixels < (int64_t{1} << 32), "geodesic_distance: maps of at most 2^32 pixels (padded by one on ",
              "each side) are supported; got spatial shape ", shape_str(seeds.sizes().slice(2)));
  const bool single = image.size(1) == 1;
  if (g.dims == 2) {
    single ? exact_geodesic<8, true>(image_padded, seeds_c, out, g, nb)
           : exact_geodesic<8, false>(image_padded, seeds_c, out, g, nb);
  } else {
    single ? exact_geodesic<26, true>(image_padded, seeds_c, out, g, nb)
           : exact_geodesic<26, false>(image_padded, seeds_c, out, g, nb);
  }
  return out;
}

at::Tensor euclidean_distance_cpu(const at::Tensor& seeds, std::optional<at::ArrayRef<double>> spacing) {
  check_euclidean_arguments(seeds, spacing);
  at::Tensor out = at::empty(seeds.sizes(), seeds.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const Geometry g = make_geometry(seeds);
  const std::vector<double> h = spacing_zyx(g, spacing);
  const at::Tensor seeds_c = seeds.contiguous();
  const bool* seeds_all = seeds_c.data_ptr<bool>();
  float* out_all = out.data_ptr<float>();
  const int64_t maps = seeds.size(0) * seeds.size(1);
  // Innermost axis first: it reads the seeds, every later pass reads and rewrites the output in place.
  for (int axis = 2; axis >= 3 - g.dims; --axis) {
    const bool first = axis == 2, last = axis == 3 - g.dims;
    const int64_t n = g.size[axis], stride = g.stride[axis];
    const int64_t lines_per_map = g.pixels / n, lines = maps * lines_per_map;
    const double h2 = h[axis] * h[axis];
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / n);
    at::parallel_for(0, lines, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> f(n);
      std::vector<int32_t> v(n);
      for (int64_t line = begin; line < end; ++line) {
        const int64_t m = line / lines_per_map;
        const int64_t start = m * g.pixels + line_start(g, axis, line % lines_per_map);
        if (first) {
          const bool* seed = seeds_all + start;
          for (int64_t i = 0; i < n; ++i) f[i] = seed[i * stride] ? 0.0f : infinity_f();
        } else {
          const float* src = out_all + start;
          for (int64_t i = 0; i < n; ++i) f[i] = src[i * stride];
        }
        envelope_line(n, h2, f.data(), 1, out_all + start, stride, last, v.data(), 1);
      }
    });
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dsp_monai, CPU, m) {
  m.impl("geodesic_distance", &geodesic_distance_cpu);
  m.impl("euclidean_distance", &euclidean_distance_cpu);
}

}  // namespace geodesic
}  // namespace dsp_monai

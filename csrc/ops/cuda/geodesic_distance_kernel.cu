// CUDA kernels of geodesic_distance and euclidean_distance. All maps of a call are processed by each launch, on
// the current stream, and every launch is checked.
//
// Exact geodesic maps (iterations = None): tiled relaxation. Each map is cut into tiles of 16 x 32 pixels (2D) or
// 8 x 8 x 8 voxels (3D); one block per (map, tile) loads the tile's distances with a one-pixel halo into shared
// memory, computes its pixels' edge costs once, and relaxes d(p) = min(d(p), d(q) + cost(q, p)) over the tile
// until nothing changes (a shortest path inside the tile may wind as it likes), then writes back. Launches repeat
// while any tile changed; a tile is only processed when it or one of its neighbouring tiles changed in the previous
// launch. When a launch changes nothing every edge is relaxed, so the distances are the smallest float path sums,
// bit for bit those of the CPU kernel. Convergence is detected on the device (a flag written by the kernel that
// marks the active tiles); the host reads the flag every kCheckEvery launches.
//
// Approximate geodesic maps (iterations = k): one block per map runs the directional passes of the CPU kernel
// (pull_from_previous_plane), one plane after another, and stops early after a round that changed nothing.
//
// Euclidean maps: one thread per line and axis runs the 1D transform of Felzenszwalb & Huttenlocher
// (envelope_line), reading one buffer and writing another.
#include <limits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/geodesic_distance.h"

namespace dsp_monai {
namespace geodesic {
namespace {

constexpr int kTileThreads = 512;
constexpr int kCheckEvery = 4;

template <int kDims>
struct Tile;
template <>
struct Tile<2> {
  static constexpr int Z = 1, Y = 16, X = 32;
};
template <>
struct Tile<3> {
  static constexpr int Z = 8, Y = 8, X = 8;
};

// The tile with its halo in shared memory; 2D tiles have no halo along z.
template <int kDims>
struct Halo {
  static constexpr int ZOffset = kDims == 3 ? 1 : 0;
  static constexpr int Z = Tile<kDims>::Z + 2 * ZOffset;
  static constexpr int Y = Tile<kDims>::Y + 2;
  static constexpr int X = Tile<kDims>::X + 2;
  static constexpr int Size = Z * Y * X;
};

struct TileGrid {
  int64_t count[3];  // tiles along z, y, x
  int64_t per_map;
};

template <int kDims>
TileGrid make_tile_grid(const Geometry& g) {
  TileGrid tiles;
  const int extent[3] = {Tile<kDims>::Z, Tile<kDims>::Y, Tile<kDims>::X};
  tiles.per_map = 1;
  for (int a = 0; a < 3; ++a) {
    tiles.count[a] = (g.size[a] + extent[a] - 1) / extent[a];
    tiles.per_map *= tiles.count[a];
  }
  return tiles;
}

// One block per (map, tile): relaxes the tile to convergence given its halo; changed[block] = 1 when any of its
// pixels got smaller. Blocks of inactive tiles only clear their flag.
template <int kDims, int K>
__global__ void __launch_bounds__(kTileThreads)
    relax_tiles_kernel(float* __restrict__ dist, const float* __restrict__ image, int64_t channels, Geometry g,
                       Neighbourhood nb, TileGrid tiles, int64_t per_image, const uint8_t* __restrict__ active,
                       uint8_t* __restrict__ changed) {
  using T = Tile<kDims>;
  using H = Halo<kDims>;
  __shared__ float s_dist[H::Size];
  const int64_t block = blockIdx.x;
  if (!active[block]) {
    if (threadIdx.x == 0) changed[block] = 0;
    return;
  }
  const int64_t map = block / tiles.per_map, tile = block % tiles.per_map;
  const int64_t z0 = (tile / (tiles.count[1] * tiles.count[2])) * T::Z;
  const int64_t y0 = ((tile / tiles.count[2]) % tiles.count[1]) * T::Y;
  const int64_t x0 = (tile % tiles.count[2]) * T::X;
  float* map_dist = dist + map * g.pixels;
  const float* map_image = image + (map / per_image) * g.pixels * channels;

  for (int i = threadIdx.x; i < H::Size; i += blockDim.x) {
    const int64_t z = z0 + i / (H::Y * H::X) - H::ZOffset;
    const int64_t y = y0 + (i / H::X) % H::Y - 1;
    const int64_t x = x0 + i % H::X - 1;
    const bool inside = z >= 0 && z < g.size[0] && y >= 0 && y < g.size[1] && x >= 0 && x < g.size[2];
    s_dist[i] = inside ? map_dist[z * g.stride[0] + y * g.stride[1] + x] : infinity_f();
  }

  const int lz = threadIdx.x / (T::Y * T::X), ly = (threadIdx.x / T::X) % T::Y, lx = threadIdx.x % T::X;
  const int64_t z = z0 + lz, y = y0 + ly, x = x0 + lx;
  const bool inside = z < g.size[0] && y < g.size[1] && x < g.size[2];
  const int64_t p = z * g.stride[0] + y * g.stride[1] + x;
  const int self = ((lz + H::ZOffset) * H::Y + ly + 1) * H::X + lx + 1;
  float cost[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t qz = z + nb.offset[k][0], qy = y + nb.offset[k][1], qx = x + nb.offset[k][2];
    const bool neighbour = inside && qz >= 0 && qz < g.size[0] && qy >= 0 && qy < g.size[1] && qx >= 0 &&
                           qx < g.size[2];
    const int64_t q = qz * g.stride[0] + qy * g.stride[1] + qx;
    cost[k] = neighbour ? edge_cost(nb.step[k], nb.lamb,
                                    intensity_change(map_image + p * channels, map_image + q * channels, channels))
                        : infinity_f();
  }
  __syncthreads();

  float own = s_dist[self];
  bool lowered = false;
  for (;;) {
    float best = own;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int shift = (nb.offset[k][0] * H::Y + nb.offset[k][1]) * H::X + nb.offset[k][2];
      const float candidate = add_rn(s_dist[self + shift], cost[k]);
      if (candidate < best) best = candidate;
    }
    const bool improved = inside && best < own;
    __syncthreads();  // every thread has read the neighbours before any writes
    if (improved) {
      s_dist[self] = best;
      own = best;
      lowered = true;
    }
    if (!__syncthreads_or(improved)) break;
  }
  if (lowered) map_dist[p] = own;
  const int any = __syncthreads_or(lowered);
  if (threadIdx.x == 0) changed[block] = any ? 1 : 0;
}

// active[tile] = the tile or one of its neighbouring tiles (same map) changed; *any_active = 1 if some tile is.
template <int kDims>
__global__ void mark_active_kernel(const uint8_t* __restrict__ changed, uint8_t* __restrict__ active,
                                   int* __restrict__ any_active, TileGrid tiles, int64_t total) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t map = index / tiles.per_map, tile = index % tiles.per_map;
  const int64_t tz = tile / (tiles.count[1] * tiles.count[2]);
  const int64_t ty = (tile / tiles.count[2]) % tiles.count[1];
  const int64_t tx = tile % tiles.count[2];
  const uint8_t* map_changed = changed + map * tiles.per_map;
  const int z_range = kDims == 3 ? 1 : 0;
  bool on = false;
  for (int dz = -z_range; dz <= z_range; ++dz) {
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        const int64_t nz = tz + dz, ny = ty + dy, nx = tx + dx;
        if (nz < 0 || nz >= tiles.count[0] || ny < 0 || ny >= tiles.count[1] || nx < 0 || nx >= tiles.count[2]) {
          continue;
        }
        on = on || map_changed[(nz * tiles.count[1] + ny) * tiles.count[2] + nx] != 0;
      }
    }
  }
  active[index] = on ? 1 : 0;
  if (on) *any_active = 1;
}

template <int kDims, int K>
void exact_geodesic(const at::Tensor& image_cl, at::Tensor& dist, const Geometry& g, const Neighbourhood& nb,
                    int64_t per_image) {
  const int64_t maps = dist.size(0) * dist.size(1);
  const TileGrid tiles = make_tile_grid<kDims>(g);
  const int64_t total = maps * tiles.per_map;
  TORCH_CHECK(total < (int64_t{1} << 31), "geodesic_distance: at most 2^31 - 1 tiles per call are supported on CUDA; ",
              "got ", total, " (", maps, " maps of ", tiles.per_map, " tiles); split the batch");
  const auto byte_options = dist.options().dtype(at::kByte);
  at::Tensor active = at::ones({total}, byte_options);
  at::Tensor changed = at::zeros({total}, byte_options);
  at::Tensor any_active = at::zeros({1}, dist.options().dtype(at::kInt));
  const int64_t channels = image_cl.size(-1);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int mark_threads = 256;
  const int64_t mark_blocks = (total + mark_threads - 1) / mark_threads;
  // A launch that changes nothing ends the loop; every launch fixes at least the next tile-crossing segment of
  // every shortest path, so pixels + 1 launches always suffice.
  const int64_t max_launches = g.pixels + 1 + kCheckEvery;
  for (int64_t launch = 1;; ++launch) {
    relax_tiles_kernel<kDims, K><<<static_cast<unsigned int>(total), kTileThreads, 0, stream>>>(
        dist.data_ptr<float>(), image_cl.data_ptr<float>(), channels, g, nb, tiles, per_image,
        active.data_ptr<uint8_t>(), changed.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    any_active.zero_();
    mark_active_kernel<kDims><<<static_cast<unsigned int>(mark_blocks), mark_threads, 0, stream>>>(
        changed.data_ptr<uint8_t>(), active.data_ptr<uint8_t>(), any_active.data_ptr<int>(), tiles, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (launch % kCheckEvery == 0) {
      if (any_active.item<int>() == 0) break;
      TORCH_CHECK(launch < max_launches, "geodesic_distance: the CUDA solver did not converge in ", launch,
                  " launches; this is a bug, please report it with the input shapes");
    }
  }
}

// One block per map: up to `iterations` rounds of directional passes (see pull_from_previous_plane).
__global__ void directional_passes_kernel(float* __restrict__ dist, const float* __restrict__ image, int64_t channels,
                                          Geometry g, Neighbourhood nb, int64_t per_image, int64_t iterations) {
  const int64_t map = blockIdx.x;
  float* map_dist = dist + map * g.pixels;
  const float* map_image = image + (map / per_image) * g.pixels * channels;
  for (int64_t it = 0; it < iterations; ++it) {
    bool changed = false;
    for (int axis = 3 - g.dims; axis < 3; ++axis) {
      const int other_a = axis == 0 ? 1 : 0, other_b = axis == 2 ? 1 : 2;
      const int64_t n = g.size[axis], plane = g.pixels / n;
      for (int direction = 1; direction >= -1; direction -= 2) {
        for (int64_t step = 1; step < n; ++step) {
          const int64_t i = direction > 0 ? step : n - 1 - step;
          for (int64_t j = threadIdx.x; j < plane; j += blockDim.x) {
            int64_t coord[3];
            coord[axis] = i;
            coord[other_a] = j / g.size[other_b];
            coord[other_b] = j % g.size[other_b];
            const float value = pull_from_previous_plane(map_dist, map_image, channels, g, nb, axis, direction,
                                                         coord[0], coord[1], coord[2]);
            float& slot = map_dist[coord[0] * g.stride[0] + coord[1] * g.stride[1] + coord[2] * g.stride[2]];
            if (value < slot) {
              slot = value;
              changed = true;
            }
          }
          __syncthreads();  // the plane is final before the next one reads it
        }
      }
    }
    if (!__syncthreads_or(changed)) break;
  }
}

// Lines along `axis` of all maps, one per thread: dst = 1D transform of src (squared, or its root).
__global__ void envelope_kernel(const float* __restrict__ src, float* __restrict__ dst, int32_t* __restrict__ scratch,
                                Geometry g, int axis, int64_t lines, double h2, bool take_sqrt) {
  const int64_t line = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (line >= lines) return;
  const int64_t lines_per_map = g.pixels / g.size[axis];
  const int64_t start = (line / lines_per_map) * g.pixels + line_start(g, axis, line % lines_per_map);
  envelope_line(g.size[axis], h2, src + start, g.stride[axis], dst + start, g.stride[axis], take_sqrt,
                scratch + line, lines);
}

// The image as float32, channels last: (B, *spatial, C), contiguous.
at::Tensor channels_last_image(const at::Tensor& image) {
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < image.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return image.to(at::kFloat).permute(order).contiguous();
}

at::Tensor initial_distances(const at::Tensor& seeds) {
  return at::where(seeds, at::zeros({}, seeds.options().dtype(at::kFloat)),
                   at::full({}, std::numeric_limits<float>::infinity(), seeds.options().dtype(at::kFloat)))
      .contiguous();
}

at::Tensor geodesic_distance_cuda(const at::Tensor& image, const at::Tensor& seeds,
                                  std::optional<at::ArrayRef<double>> spacing, double lamb,
                                  std::optional<int64_t> iterations) {
  check_geodesic_arguments(image, seeds, spacing, lamb, iterations);
  const c10::cuda::CUDAGuard guard(seeds.device());
  if (seeds.numel() == 0) return at::empty(seeds.sizes(), seeds.options().dtype(at::kFloat));
  const Geometry g = make_geometry(seeds);
  const Neighbourhood nb = make_neighbourhood(g, spacing_zyx(g, spacing), lamb);
  const at::Tensor image_cl = channels_last_image(image);
  at::Tensor dist = initial_distances(seeds);
  const int64_t per_image = seeds.size(1), maps = seeds.size(0) * per_image;
  if (iterations.has_value()) {
    TORCH_CHECK(maps < (int64_t{1} << 31), "geodesic_distance: at most 2^31 - 1 maps per call are supported on ",
                "CUDA; got ", maps);
    directional_passes_kernel<<<static_cast<unsigned int>(maps), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        dist.data_ptr<float>(), image_cl.data_ptr<float>(), image_cl.size(-1), g, nb, per_image, *iterations);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dist;
  }
  if (g.dims == 2) {
    exact_geodesic<2, 8>(image_cl, dist, g, nb, per_image);
  } else {
    exact_geodesic<3, 26>(image_cl, dist, g, nb, per_image);
  }
  return dist;
}

at::Tensor euclidean_distance_cuda(const at::Tensor& seeds, std::optional<at::ArrayRef<double>> spacing) {
  check_euclidean_arguments(seeds, spacing);
  const c10::cuda::CUDAGuard guard(seeds.device());
  if (seeds.numel() == 0) return at::empty(seeds.sizes(), seeds.options().dtype(at::kFloat));
  const Geometry g = make_geometry(seeds);
  const std::vector<double> h = spacing_zyx(g, spacing);
  const int64_t maps = seeds.size(0) * seeds.size(1);
  at::Tensor src = initial_distances(seeds);
  at::Tensor dst = at::empty_like(src);
  at::Tensor scratch = at::empty({maps * g.pixels}, seeds.options().dtype(at::kInt));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int threads = 128;
  for (int axis = 2; axis >= 3 - g.dims; --axis) {
    const int64_t lines = maps * (g.pixels / g.size[axis]);
    const int64_t blocks = (lines + threads - 1) / threads;
    TORCH_CHECK(blocks < (int64_t{1} << 31), "euclidean_distance: too many lines for one CUDA launch (", lines, ")");
    envelope_kernel<<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
        src.data_ptr<float>(), dst.data_ptr<float>(), scratch.data_ptr<int32_t>(), g, axis, lines,
        h[axis] * h[axis], axis == 3 - g.dims);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(src, dst);
  }
  return src;
}

}  // namespace

TORCH_LIBRARY_IMPL(dsp_monai, CUDA, m) {
  m.impl("geodesic_distance", &geodesic_distance_cuda);
  m.impl("euclidean_distance", &euclidean_distance_cuda);
}

}  // namespace geodesic
}  // namespace dsp_monai

// Schemas of the distance-map ops (geodesic_distance, euclidean_distance), their argument checks, and their
// autograd registration: both are non-differentiable, so the Autograd kernel runs the backend kernel below
// autograd and its outputs never require grad.
#include "ops/geodesic_distance.h"

#include <cmath>
#include <sstream>

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/common.h"

namespace dsp_monai {
namespace geodesic {

namespace {

constexpr const char* kGeodesic = "geodesic_distance: ";
constexpr const char* kEuclidean = "euclidean_distance: ";

std::string list_str(at::ArrayRef<double> values) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << "]";
  return out.str();
}

void check_seeds(const char* op, const at::Tensor& seeds) {
  TORCH_CHECK(seeds.dim() == 4 || seeds.dim() == 5, op,
              "seeds must have shape (B, S, H, W) or (B, S, D, H, W); got shape ", shape_str(seeds.sizes()));
  TORCH_CHECK(seeds.scalar_type() == at::kBool, op,
              "seeds must be a bool mask (True at the seed points); got dtype ", dtype_name(seeds.scalar_type()),
              " (convert with seeds > 0)");
}

void check_spacing(const char* op, const at::Tensor& seeds, const std::optional<at::ArrayRef<double>>& spacing) {
  if (!spacing.has_value()) return;
  const int64_t dims = seeds.dim() - 2;
  TORCH_CHECK(static_cast<int64_t>(spacing->size()) == dims, op, "spacing must hold one value per spatial dim (",
              dims, "); got ", list_str(*spacing));
  for (double value : *spacing) {
    TORCH_CHECK(std::isfinite(value) && value > 0.0, op, "spacing must hold finite values > 0; got ",
                list_str(*spacing));
  }
}

}  // namespace

void check_geodesic_arguments(const at::Tensor& image, const at::Tensor& seeds,
                              const std::optional<at::ArrayRef<double>>& spacing, double lamb,
                              const std::optional<int64_t>& iterations) {
  TORCH_CHECK(image.dim() == 4 || image.dim() == 5, kGeodesic,
              "image must have shape (B, C, H, W) or (B, C, D, H, W); got shape ", shape_str(image.sizes()));
  const auto itype = image.scalar_type();
  TORCH_CHECK(itype == at::kFloat || itype == at::kDouble || itype == at::kHalf || itype == at::kBFloat16, kGeodesic,
              "image must be torch.float32, torch.float64, torch.float16 or torch.bfloat16; got ", dtype_name(itype));
  TORCH_CHECK(image.size(1) >= 1, kGeodesic, "image must have at least one channel (dim 1); got shape ",
              shape_str(image.sizes()));
  check_seeds(kGeodesic, seeds);
  TORCH_CHECK(seeds.device() == image.device(), kGeodesic, "seeds must be on the device of image (",
              device_str(image.device()), "); got ", device_str(seeds.device()));
  std::vector<int64_t> expected{image.size(0), seeds.size(1)};
  for (int64_t d = 2; d < image.dim(); ++d) expected.push_back(image.size(d));
  TORCH_CHECK(seeds.sizes().vec() == expected, kGeodesic,
              "seeds must have shape (B, S, *spatial) with the batch size and spatial shape of image ",
              shape_str(image.sizes()), ", i.e. ", shape_str(expected), "; got ", shape_str(seeds.sizes()));
  check_spacing(kGeodesic, seeds, spacing);
  TORCH_CHECK(std::isfinite(lamb) && lamb >= 0.0 && lamb <= 1.0, kGeodesic, "lamb must be in [0, 1]; got ", lamb);
  TORCH_CHECK(!iterations.has_value() || *iterations >= 1, kGeodesic,
              "iterations must be None (exact) or an int >= 1; got ", iterations.value_or(0));
}

void check_euclidean_arguments(const at::Tensor& seeds, const std::optional<at::ArrayRef<double>>& spacing) {
  check_seeds(kEuclidean, seeds);
  check_spacing(kEuclidean, seeds, spacing);
}

Geometry make_geometry(const at::Tensor& seeds) {
  Geometry g;
  g.dims = static_cast<int>(seeds.dim()) - 2;
  const int first = 3 - g.dims;
  for (int a = 0; a < g.dims; ++a) g.size[first + a] = seeds.size(2 + a);
  g.stride[2] = 1;
  g.stride[1] = g.size[2];
  g.stride[0] = g.size[1] * g.size[2];
  g.pixels = g.size[0] * g.size[1] * g.size[2];
  return g;
}

std::vector<double> spacing_zyx(const Geometry& geometry, const std::optional<at::ArrayRef<double>>& spacing) {
  std::vector<double> out(3, 1.0);
  if (spacing.has_value()) {
    const int first = 3 - geometry.dims;
    for (int a = 0; a < geometry.dims; ++a) out[first + a] = (*spacing)[a];
  }
  return out;
}

Neighbourhood make_neighbourhood(const Geometry& geometry, const std::vector<double>& spacing, double lamb) {
  Neighbourhood nb;
  nb.lamb = static_cast<float>(lamb);
  const int z_range = geometry.dims == 3 ? 1 : 0;
  for (int dz = -z_range; dz <= z_range; ++dz) {
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        if (dz == 0 && dy == 0 && dx == 0) continue;
        const int k = nb.count++;
        nb.offset[k][0] = static_cast<int8_t>(dz);
        nb.offset[k][1] = static_cast<int8_t>(dy);
        nb.offset[k][2] = static_cast<int8_t>(dx);
        const double length = std::sqrt(dz * dz * spacing[0] * spacing[0] + dy * dy * spacing[1] * spacing[1] +
                                         dx * dx * spacing[2] * spacing[2]);
        nb.step[k] = static_cast<float>((1.0 - lamb) * length);
      }
    }
  }
  return nb;
}

namespace {

// Non-differentiable: run the backend kernel below autograd, so that the outputs never require grad.
at::Tensor geodesic_distance_autograd(const at::Tensor& image, const at::Tensor& seeds,
                                      std::optional<at::ArrayRef<double>> spacing, double lamb,
                                      std::optional<int64_t> iterations) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("dsp_monai::geodesic_distance", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<at::ArrayRef<double>>,
                                         double, std::optional<int64_t>)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(image, seeds, spacing, lamb, iterations);
}

at::Tensor euclidean_distance_autograd(const at::Tensor& seeds, std::optional<at::ArrayRef<double>> spacing) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("dsp_monai::euclidean_distance", "")
                       .typed<at::Tensor(const at::Tensor&, std::optional<at::ArrayRef<double>>)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(seeds, spacing);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dsp_monai, m) {
  m.def(
      "geodesic_distance(Tensor image, Tensor seeds, float[]? spacing=None, float lamb=1.0, int? iterations=None) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def("euclidean_distance(Tensor seeds, float[]? spacing=None) -> Tensor", {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(dsp_monai, Autograd, m) {
  m.impl("geodesic_distance", &geodesic_distance_autograd);
  m.impl("euclidean_distance", &euclidean_distance_autograd);
}

}  // namespace geodesic
}  // namespace dsp_monai

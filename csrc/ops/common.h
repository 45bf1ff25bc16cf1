// Helpers shared by every op family: readable argument checks whose messages name the op, the argument,
// what was expected and what arrived.
#pragma once

#include <sstream>
#include <string>

#include <ATen/ATen.h>

namespace dsp_monai {

// torch-style dtype names ("torch.float32"), so C++ and Python messages read the same.
inline std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(type);
  }
}

// "[2, 3, 8, 8]", like list(tensor.shape) in Python.
inline std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << "]";
  return out.str();
}

inline std::string device_str(const at::Device& device) { return device.str(); }

}  // namespace dsp_monai

// The AVX2 + FMA build of the prototype_logsumexp CPU kernels (prototype_logsumexp_kernel_impl.h). Every library
// header is included before the target switch, so only the kernels themselves use the wider instructions, and
// prototype_logsumexp_kernel.cpp calls them only on processors that have AVX2 and FMA.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ops/prototype_logsumexp.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define DSP_CPU_ISA avx2
#define DSP_VEC_BYTES 32
#define DSP_VEC_REGS 16
#include "ops/cpu/prototype_logsumexp_kernel_impl.h"
#undef DSP_VEC_REGS
#undef DSP_VEC_BYTES
#undef DSP_CPU_ISA
#pragma GCC pop_options
#endif

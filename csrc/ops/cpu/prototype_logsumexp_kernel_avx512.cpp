// The AVX-512 build of the prototype_logsumexp CPU kernels (prototype_logsumexp_kernel_impl.h): 64-byte vectors and
// 32 vector registers, so the micro-kernels hold twice the accumulators of the AVX2 build. Every library header is
// included before the target switch, so only the kernels themselves use the wider instructions, and
// prototype_logsumexp_kernel.cpp calls them only on processors that have AVX-512 F, BW, DQ and VL.
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
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
#define DSP_CPU_ISA avx512
#define DSP_VEC_BYTES 64
#define DSP_VEC_REGS 32
#include "ops/cpu/prototype_logsumexp_kernel_impl.h"
#undef DSP_VEC_REGS
#undef DSP_VEC_BYTES
#undef DSP_CPU_ISA
#pragma GCC pop_options
#endif

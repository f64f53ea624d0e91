// Which instruction sets the native core compiles code for (internal header).
//
// The pattern, for every file that has x86 SIMD code:
//
//   #include "arch.h"            // instead of <immintrin.h>
//   #if SIMDEX_X86
//   __attribute__((target("avx2"))) void f_avx2(...) { ... _mm256_... }
//   #endif
//   ...
//   Fn pick() {
//   #if SIMDEX_X86
//     __builtin_cpu_init();
//     if (__builtin_cpu_supports("avx2")) return f_avx2;
//   #endif
//     return f_scalar;           // every target has the scalar version
//   }
//
// - Intrinsics, __attribute__((target(...))) and __builtin_cpu_supports stay inside
//   `#if SIMDEX_X86`; the scalar version is compiled everywhere and is the fallback.
// - Prefetches use SIMDEX_PREFETCH (a GCC/Clang builtin on every target), not _mm_prefetch.
// - Auto-vectorised loops use SIMDEX_CLONES (function multi-versioning on x86, a plain
//   function elsewhere).
// - -DSIMDEX_NO_X86 compiles the portable paths on an x86 host too (make check-portable).
#pragma once

#if (defined(__x86_64__) || defined(__i386__)) && !defined(SIMDEX_NO_X86)
#define SIMDEX_X86 1
#include <immintrin.h>
#else
#define SIMDEX_X86 0
#endif

/// Prefetch the cache line at p for reading, into all cache levels (_MM_HINT_T0 on x86).
#define SIMDEX_PREFETCH(p) __builtin_prefetch((p), 0, 3)

#if SIMDEX_X86
/// x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and baseline versions, picked at load time.
#define SIMDEX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMDEX_CLONES
#endif

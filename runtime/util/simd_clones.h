// SEQBOAT_SIMD_CLONES: hot loops get AVX-512 and AVX2 clones picked at load time; the default
// build stays portable. Not under sanitizers: their runtimes are not ready when the loader
// runs the clones' ifunc resolvers (ThreadSanitizer crashes there).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SEQBOAT_SANITIZED)
#define SEQBOAT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SEQBOAT_SIMD_CLONES
#endif

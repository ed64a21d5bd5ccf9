// Runtime ISA selection for the hot CPU loops.
//
// The extension is compiled for baseline x86-64 (SSE2) so that it runs on any
// x86-64 machine, while ATen picks AVX2/AVX-512 kernels at run time. Functions
// marked FASTNAS_CPU_CLONES are compiled three times (AVX-512, AVX2, baseline)
// and the dynamic loader picks the best one for the CPU it runs on (GCC function
// multi-versioning through an ifunc). Write the loop once as an always-inline
// template and clone thin non-template wrappers (GCC clones no templates).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define FASTNAS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTNAS_CPU_CLONES
#endif

#define FASTNAS_ALWAYS_INLINE inline __attribute__((always_inline))

// The literal scanner's bloom test, eight sampled windows at a time (see _literals.pxi).
//
// cm_bloom8_avx2(p, step, bloom, shift), step 2 to 4: bit k of the result is set when the
// window at p + k * step (k < 8) may have a literal filed under it: its hash, taken with bit 5
// of every byte set, has its bit set in the bloom. Reads the 7 * step + 4 bytes at p (the eight
// windows), as two 16-byte loads: at p (windows 0-3) and ending with window 7 (windows 4-7).
// One multiply for the eight hashes, one gather for their bloom words; only for CPUs with AVX2
// (cm_has_avx2(); else the scanner's scalar loop runs). An SSE4.1 version, which tests the eight
// bits one by one, ran as many instructions as the scalar loop. The bloom is read as 32-bit
// words (x86 is little-endian: bit h is word h / 32's bit h % 32).

#pragma once

#include <stdint.h>
#include <immintrin.h>

// Per step (2 to 4): where each window's bytes are in the first load (windows 0-3) and in the
// second (windows 4-7, the load starting 7 * step - 12 bytes after p); one per 128-bit lane.
alignas(32) static const uint8_t cm_window_shuffle[3][32] = {
    {0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 15},
    {0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12, 12, 13, 14, 15},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
};

__attribute__((target("avx2"))) static uint32_t cm_bloom8_avx2(const unsigned char* p, uint32_t step,
                                                               const uint32_t* bloom, uint32_t shift) {
    __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)p)),
                                        _mm_loadu_si128((const __m128i*)(p + 7 * step - 12)), 1);
    w = _mm256_shuffle_epi8(w, _mm256_load_si256((const __m256i*)cm_window_shuffle[step - 2]));
    w = _mm256_or_si256(w, _mm256_set1_epi32(0x20202020));
    __m256i h = _mm256_srl_epi32(_mm256_mullo_epi32(w, _mm256_set1_epi32((int)0x9E3779B1u)),
                                 _mm_cvtsi32_si128((int)shift));
    __m256i words = _mm256_i32gather_epi32((const int*)bloom, _mm256_srli_epi32(h, 5), 4);
    __m256i bits = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_and_si256(h, _mm256_set1_epi32(31)));
    __m256i miss = _mm256_cmpeq_epi32(_mm256_and_si256(words, bits), _mm256_setzero_si256());
    return ~(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(miss)) & 0xFFu;
}

static inline int cm_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

static inline int cm_ctz(uint32_t x) { return __builtin_ctz(x); }

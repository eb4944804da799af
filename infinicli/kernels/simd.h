/* Shared helpers of the native kernels (AVX-512 with BF16): bf16 <-> fp32 vectors, 2^x, a parallel loop.
 * Included by attention.c and fused.c; everything here is static inline or static (one copy per file). */
#ifndef INFINI_SIMD_H
#define INFINI_SIMD_H
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>

typedef uint16_t bf16;

#define LOG2E 1.4426950408889634f

/* 2^x, x clamped to [-126, 126], |rel err| < 2e-7 */
static inline __m512 exp2_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(126.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n); /* [-0.5, 0.5] */
    __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.2402265069591007f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931471805599453f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 16 bf16 -> 16 fp32 (exact) */
static inline __m512 load_bf16(const bf16 *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline __m512 maskz_load_bf16(__mmask16 m, const bf16 *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

/* 16 fp32 -> 16 bf16, round to nearest even (as torch's .to(torch.bfloat16)) */
static inline void store_bf16(bf16 *p, __m512 x) { _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(x)); }

/* x rounded to bf16 and back, as torch's fp32 -> bf16 -> fp32 */
static inline __m512 round_bf16(__m512 x) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)), 16));
}

static inline void mask_store_bf16(bf16 *p, __mmask16 m, __m512 x) {
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(x));
}

/* σ(x) = ELU(x) + 1: x + 1 for x > 0, e^x otherwise */
static inline __m512 sigma_ps(__m512 x) {
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
    __m512 e = exp2_ps(_mm512_mul_ps(_mm512_min_ps(x, _mm512_setzero_ps()), _mm512_set1_ps(LOG2E)));
    return _mm512_mask_add_ps(e, pos, x, _mm512_set1_ps(1.0f));
}

/* fn(ctx, i) for i in [0, n) on n_threads threads. Built with -fopenmp, the library links libgomp.so.1, which
 * in a torch process is torch's own: the items then run on torch's OpenMP threads (no oversubscription of the
 * cores by a second pool, no thread start per call). Without OpenMP: the caller and n_threads - 1 pthreads
 * take items from an atomic counter. */
#ifdef _OPENMP
#include <omp.h>

static void parallel_for(void (*fn)(void *, int), void *ctx, int n, int n_threads) {
    if (n_threads > n) n_threads = n;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int i = 0; i < n; i++) fn(ctx, i);
}
#else
typedef struct {
    void (*fn)(void *, int);
    void *ctx;
    int n;
    int next;
} pfor_t;

static void *pfor_worker(void *arg) {
    pfor_t *p = (pfor_t *)arg;
    for (;;) {
        int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->n) break;
        p->fn(p->ctx, i);
    }
    return NULL;
}

static void parallel_for(void (*fn)(void *, int), void *ctx, int n, int n_threads) {
    pfor_t p = {fn, ctx, n, 0};
    if (n_threads > n) n_threads = n;
    if (n_threads > 64) n_threads = 64;
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < n_threads; i++)
        if (pthread_create(&th[started], NULL, pfor_worker, &p) == 0) started++;
    pfor_worker(&p);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
}
#endif

#endif

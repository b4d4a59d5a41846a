/* Seeded random numbers for tests: uniform and Gaussian, never all zeros. */
#ifndef IKV_TESTS_RNG_H
#define IKV_TESTS_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct test_rng {
  uint64_t s;
} test_rng;

static inline uint64_t rng_next(test_rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return r->s;
}
/* Uniform in [0, 1). */
static inline double rng_uniform(test_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }
static inline uint32_t rng_below(test_rng *r, uint32_t n) { return (uint32_t)(rng_next(r) % n); }
/* Standard normal (Box-Muller). */
static inline float rng_gauss(test_rng *r) {
  double u = rng_uniform(r) + 0x1.0p-60, v = rng_uniform(r);
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static inline void rng_fill_gauss(test_rng *r, float *x, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) x[i] = rng_gauss(r) * scale;
}

#endif

/* rng.h — the one random number generator of training: small, seeded,
 * with its whole state in a struct so checkpoints can save and restore it. */
#ifndef NF_RNG_H
#define NF_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state; /* xorshift64*, never 0 */
} Rng;

void rng_seed(Rng *r, uint64_t seed);
/* splitmix64's mix of x: a stateless random number per counter value
 * (LoRA dropout masks are drawn this way, so backward can redraw them). */
uint64_t rng_hash(uint64_t x);
/* Uniform in [0, n) for n >= 1. */
uint64_t rng_below(Rng *r, uint64_t n);
/* Uniform float in [0, 1). */
float rng_uniform(Rng *r);
/* Standard normal (Box-Muller). */
float rng_normal(Rng *r);

#endif

/* sampler.h — choosing the next token from logits: greedy, or temperature
 * with optional top-k and top-p (nucleus) filtering, from a seeded RNG so
 * that the same seed gives the same text. */
#ifndef NF_SAMPLER_H
#define NF_SAMPLER_H

#include <stdint.h>

#include "error.h"
#include "rng.h"

typedef struct {
    int vocab_size;
    float temperature; /* 0 = greedy */
    float top_p;       /* 1 = off */
    int top_k;         /* 0 = off */
    Rng rng;
    uint64_t *order; /* (2, vocab_size) scratch: tokens' sort keys, and the sort's second buffer */
} Sampler;

int sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, int top_k, uint64_t seed, NfError *err);
void sampler_free(Sampler *s);

/* Picks a token; logits (vocab_size) are overwritten. */
int sampler_sample(Sampler *s, float *logits);

/* Uniform float in [0, 1) from the sampler's RNG. */
float sampler_random(Sampler *s);

#endif

/* sampler.c — greedy, temperature, top-k and top-p sampling. */
#include "sampler.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "util.h"

int sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, int top_k, uint64_t seed, NfError *err) {
    memset(s, 0, sizeof *s);
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_p = top_p;
    s->top_k = top_k;
    rng_seed(&s->rng, seed);
    s->candidates = nf_alloc_array((size_t)vocab_size, sizeof(ProbIndex), err);
    return s->candidates ? 0 : -1;
}

void sampler_free(Sampler *s) {
    free(s->candidates);
    memset(s, 0, sizeof *s);
}

float sampler_random(Sampler *s) { return rng_uniform(&s->rng); }

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    float pa = ((const ProbIndex *)a)->prob, pb = ((const ProbIndex *)b)->prob;
    if (pa != pb) return pa > pb ? -1 : 1;
    return ((const ProbIndex *)a)->index - ((const ProbIndex *)b)->index;
}

int sampler_sample(Sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->temperature == 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    nf_softmax(logits, n);
    float r = sampler_random(s);
    bool filtered = (s->top_k > 0 && s->top_k < n) || s->top_p < 1.0f;
    if (!filtered) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (r < cdf) return i;
        }
        return n - 1; /* rounding */
    }
    /* Keep the most probable tokens: the top k, then the smallest prefix whose mass reaches top_p. */
    int m = 0;
    for (int i = 0; i < n; i++) s->candidates[m++] = (ProbIndex){i, logits[i]};
    qsort(s->candidates, (size_t)m, sizeof(ProbIndex), by_prob_desc);
    if (s->top_k > 0 && s->top_k < m) m = s->top_k;
    float mass = 0.0f;
    int keep = m;
    for (int i = 0; i < m; i++) {
        mass += s->candidates[i].prob;
        if (mass >= s->top_p) {
            keep = i + 1;
            break;
        }
    }
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += s->candidates[i].prob;
    float target = r * total, cdf = 0.0f;
    for (int i = 0; i < keep; i++) {
        cdf += s->candidates[i].prob;
        if (target < cdf) return s->candidates[i].index;
    }
    return s->candidates[keep - 1].index;
}

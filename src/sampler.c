/* sampler.c — greedy, temperature, top-k and top-p sampling.
 *
 * Filtered sampling walks the tokens from the most probable down (ties by the
 * lower id). That order comes from an LSD radix sort of 64-bit keys rather
 * than qsort: sorting 32,000 tokens with qsort cost 6-8 ms a token, most of a
 * 110M model's forward pass (docs/performance.md, "Sampling"). And under
 * top-p only the tokens that can be in the nucleus are sorted at all. */
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
    s->order = nf_alloc_array((size_t)vocab_size * 2, sizeof(uint64_t), err);
    return s->order ? 0 : -1;
}

void sampler_free(Sampler *s) {
    free(s->order);
    memset(s, 0, sizeof *s);
}

float sampler_random(Sampler *s) { return rng_uniform(&s->rng); }

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* A token's sort key: its probability's bits inverted above its id, so that
 * ascending keys are descending probabilities, equal ones by ascending id (a
 * probability is >= 0, and non-negative floats order as their bits do). */
static uint64_t order_key(float prob, int id) {
    uint32_t bits;
    memcpy(&bits, &prob, sizeof bits);
    return (uint64_t)(uint32_t)~bits << 32 | (uint32_t)id;
}

static float key_prob(uint64_t key) {
    uint32_t bits = ~(uint32_t)(key >> 32);
    float prob;
    memcpy(&prob, &bits, sizeof prob);
    return prob;
}

static int key_id(uint64_t key) { return (int)(uint32_t)key; }

/* keys (n) sorted ascending, a byte at a time from the lowest; bytes that
 * every key shares are skipped (most of a probability's exponent, the high
 * bytes of the ids). tmp (n) is scratch. */
static void radix_sort(uint64_t *keys, uint64_t *tmp, int n) {
    if (n < 2) return;
    size_t count[8][256] = {{0}};
    for (int i = 0; i < n; i++)
        for (int d = 0; d < 8; d++) count[d][keys[i] >> (8 * d) & 255]++;
    uint64_t *from = keys, *to = tmp;
    for (int d = 0; d < 8; d++) {
        if (count[d][keys[0] >> (8 * d) & 255] == (size_t)n) continue;
        size_t at = 0;
        for (int b = 0; b < 256; b++) {
            size_t c = count[d][b];
            count[d][b] = at;
            at += c;
        }
        for (int i = 0; i < n; i++) to[count[d][from[i] >> (8 * d) & 255]++] = from[i];
        uint64_t *t = from;
        from = to, to = t;
    }
    if (from != keys) memcpy(keys, from, (size_t)n * sizeof *keys);
}

/* The tokens of probability >= at_least, most probable first, in s->order:
 * how many */
static int sort_candidates(Sampler *s, const float *probs, float at_least) {
    int m = 0;
    for (int i = 0; i < s->vocab_size; i++)
        if (probs[i] >= at_least) s->order[m++] = order_key(probs[i], i);
    radix_sort(s->order, s->order + s->vocab_size, m);
    return m;
}

/* How many of the first `limit` sorted tokens make the smallest prefix whose
 * mass reaches top_p, or -1 when all of them do not */
static int nucleus(const Sampler *s, int limit) {
    float mass = 0.0f;
    for (int i = 0; i < limit; i++) {
        mass += key_prob(s->order[i]);
        if (mass >= s->top_p) return i + 1;
    }
    return -1;
}

int sampler_sample(Sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->temperature == 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    nf_softmax(logits, n);
    float r = sampler_random(s);
    int limit = s->top_k > 0 && s->top_k < n ? s->top_k : n; /* the top k */
    if (limit == n && s->top_p >= 1.0f) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (r < cdf) return i;
        }
        return n - 1; /* rounding */
    }
    /* Keep the most probable tokens: the top k, then the smallest prefix whose mass reaches top_p. Only a token of
     * probability >= (1 - top_p) / (n - 1) can be in that prefix, as llama2.c reasons: all the others together hold
     * less than 1 - top_p, so the more probable ones reach top_p before any of them. Where rounding leaves those
     * short of top_p all tokens are sorted after all, so the prefix is always the one a sort of every token gives,
     * summed in the same order. */
    float at_least = s->top_p < 1.0f && n > 1 ? (1.0f - s->top_p) / (float)(n - 1) : 0.0f;
    int m = sort_candidates(s, logits, at_least), keep = nucleus(s, m < limit ? m : limit);
    if (keep < 0 && m < limit) {
        m = sort_candidates(s, logits, 0.0f);
        keep = nucleus(s, limit);
    }
    if (keep < 0) keep = limit; /* every token is sorted by now, or the first `limit` are */
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += key_prob(s->order[i]);
    float target = r * total, cdf = 0.0f;
    for (int i = 0; i < keep; i++) {
        cdf += key_prob(s->order[i]);
        if (target < cdf) return key_id(s->order[i]);
    }
    return key_id(s->order[keep - 1]);
}

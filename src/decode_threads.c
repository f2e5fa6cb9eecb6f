/* decode_threads.c — the thread count of generated tokens on a shared machine (decode_threads.h). */
#include "decode_threads.h"

/* The count a probe tries: one thread fewer from all of them, else all of them again. */
static int other_count(const DecodeThreads *d) { return d->current == d->max ? d->max - 1 : d->max; }

void decode_threads_init(DecodeThreads *d, int max) {
    *d = (DecodeThreads){.max = max, .current = max, .run_tokens = DECODE_RUN_TOKENS};
}

int decode_threads_next(const DecodeThreads *d) { return d->max >= 2 && d->probing ? other_count(d) : d->current; }

void decode_threads_record(DecodeThreads *d, double ms) {
    if (d->max < 2) return;
    d->count++;
    if (!d->probing) {
        if (d->count > d->run_tokens - DECODE_SAMPLE_TOKENS) d->run_ms += ms;
        if (d->count >= d->run_tokens) d->probing = true, d->count = 0;
        return;
    }
    if (d->count > 1) d->probe_ms += ms; /* the first token woke the other count's threads */
    if (d->count < 1 + DECODE_SAMPLE_TOKENS) return;
    int other = other_count(d);
    double margin = other < d->current ? 0.85 : 0.95;
    bool change = d->probe_ms < margin * d->run_ms;
    int run_tokens = change ? DECODE_RUN_TOKENS : d->run_tokens * 2;
    *d = (DecodeThreads){.max = d->max,
                         .current = change ? other : d->current,
                         .run_tokens = run_tokens < DECODE_RUN_TOKENS_MAX ? run_tokens : DECODE_RUN_TOKENS_MAX};
}

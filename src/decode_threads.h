/* decode_threads.h — how many threads a generated token uses when other work shares the machine.
 *
 * A token is some 50-150 short parallel regions (its products, its attention). When another process keeps a
 * core busy, the thread that shares that core is descheduled for whole time slices, and every region waits for
 * it: on the 2-core AMD EPYC VM, q8 decode of the 110M shape beside one busy process ran at 0.32-0.41 of its idle
 * speed with 2 threads, and at 0.96-0.99 with 1 (docs/performance.md, "Sharing the machine"). So when the user has
 * not chosen a thread count, generation times a few tokens now and then with one thread fewer (or, having dropped
 * one, with all of them again) and keeps whichever count ran faster.
 *
 * The schedule: a run phase at the present count, its last DECODE_SAMPLE_TOKENS tokens timed; then one token at
 * the other count to wake its threads (untimed) and DECODE_SAMPLE_TOKENS timed; then the choice. The run phase is
 * DECODE_RUN_TOKENS long after a change and doubles, up to DECODE_RUN_TOKENS_MAX, each time a probe keeps the
 * count: one thread fewer ran a token at 0.55-0.65 of the speed on an idle machine, so probing every ~70 tokens
 * cost 4% there; with the back-off, 512 tokens alone ran as fast as before (docs/performance.md). */
#ifndef NF_DECODE_THREADS_H
#define NF_DECODE_THREADS_H

#include <stdbool.h>

#define DECODE_RUN_TOKENS     64
#define DECODE_RUN_TOKENS_MAX 1024
#define DECODE_SAMPLE_TOKENS  4

typedef struct {
    int max;         /* the most threads a token may use; below 2 nothing is ever changed */
    int current;     /* the count the run phase uses */
    int run_tokens;  /* the present run phase's length */
    int count;       /* tokens into the present phase */
    bool probing;    /* the present phase runs at the other count: max - 1 from max, else max */
    double run_ms;   /* the last DECODE_SAMPLE_TOKENS of the run phase, summed */
    double probe_ms; /* the probe's timed tokens, summed */
} DecodeThreads;

/* Starts at max threads. */
void decode_threads_init(DecodeThreads *d, int max);

/* The threads the next token runs with. */
int decode_threads_next(const DecodeThreads *d);

/* That token took ms (wall time of its forward pass): advances the schedule, and at a probe's end keeps the
 * other count when it ran clearly faster (fewer threads: 15% less time, since on an idle machine one thread
 * fewer is itself a little slower; all of them again: 5%). */
void decode_threads_record(DecodeThreads *d, double ms);

#endif

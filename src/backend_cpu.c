/* backend_cpu.c — the CPU implementation of backend.h.
 *
 * Batched fp32 products go to oneDNN's sgemm (which picks its own kernels
 * for the CPU); single rows (generation) use an OpenMP row-parallel dot
 * product, memory-bound either way. Attention's small per-head tiles run on
 * register panels of our own on AVX-512, AVX2 and NEON (oneDNN's per-call
 * packing cost more than the products) and on sgemm elsewhere. The
 * hand-written inner loops come in tiers: AVX-512 (VNNI, BF16) in
 * kernels_avx512.c and AVX2 + FMA (AVX-VNNI) in kernels_avx2.c on x86-64,
 * NEON (DotProd) in kernels_neon.c on aarch64, and portable C or oneDNN
 * here. Which one runs is decided at each entry point from the running
 * CPU's features, so one binary serves every x86-64 machine, and one every
 * ARMv8-A machine. */
#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h> /* getauxval(AT_HWCAP): DotProd */
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h> /* hw.optional.arm.FEAT_DotProd (untested: README's "ARM64 and macOS") */
#endif
#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "block_claims.h"
#include "f16.h"
#include "kernels.h"
#include "util.h"

/* The tiers of hand-written kernels: portable C; on x86-64 (baseline
 * x86-64-v2) AVX2 + FMA, then AVX-512 (F, BW, DQ, VL, and FMA), each a
 * superset of the one before; on aarch64 NEON (Advanced SIMD, in every
 * ARMv8-A CPU), below the x86 ones so that `>= TIER_AVX2` means x86. */
typedef enum { TIER_BASELINE, TIER_NEON, TIER_AVX2, TIER_AVX512 } CpuTier;

/* The extras within a tier: AVX-512 VNNI and BF16, AVX-VNNI (VEX), and aarch64's DotProd (sdot) */
typedef enum { CPU_VNNI, CPU_BF16, CPU_AVXVNNI, CPU_DOTPROD } CpuFeature;

/* The vector tier's kernel `name` (kernels.h), for a tier other than TIER_BASELINE: the
 * vector kernels every tier has, so that each call site names them once. */
#if defined(__x86_64__)
#define TIER_KERNEL(tier, name) ((tier) == TIER_AVX512 ? avx512_##name : avx2_##name)
#elif defined(__aarch64__)
#define TIER_KERNEL(tier, name) ((void)(tier), neon_##name)
#else
#error "NeuralForge's CPU backend is built for x86-64 or aarch64"
#endif

#if defined(__x86_64__)
/* F16C (CPUID leaf 1, ECX bit 29): libgcc's table for gcc; clang 14's builtin does not know it (the fuzz build),
 * which reads CPUID (a trap to the hypervisor on a VM, but the fuzz build times nothing) */
static bool cpu_f16c(void) {
#if defined(__clang__)
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1u);
#else
    return __builtin_cpu_supports("f16c");
#endif
}
#endif

/* The best tier the running CPU has (cpuid, through the compiler's builtin,
 * asked each time rather than remembered), capped by NF_CPU: baseline or
 * avx2 force a lower tier, so every tier can be run and tested on one
 * machine (nf_cpu_check_env has refused any other value). */
static CpuTier cpu_tier(void) {
#if defined(__x86_64__)
    const char *force = getenv("NF_CPU");
    if (force && strcmp(force, "baseline") == 0) return TIER_BASELINE;
    /* F16C (fp16 to fp32) comes with every AVX2 CPU; asked all the same, as the tiers' kernels use it */
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !cpu_f16c()) return TIER_BASELINE;
    if (force && strcmp(force, "avx2") == 0) return TIER_AVX2;
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return avx512 ? TIER_AVX512 : TIER_AVX2;
#else
    /* aarch64: NF_CPU=avx2 and native both leave NEON, the only vector tier (avx2 caps the tier, and NEON's
     * 128 bits are below it) */
    const char *force = getenv("NF_CPU");
    return force && strcmp(force, "baseline") == 0 ? TIER_BASELINE : TIER_NEON;
#endif
}

#if defined(__x86_64__)
/* AVX-VNNI (CPUID leaf 7, sub-leaf 1, EAX bit 4). gcc's __builtin_cpu_supports reads the table libgcc filled once at
 * start-up; CPUID itself traps to the hypervisor on a VM (3.2 us each here), and matmul_q8 asks once per product,
 * ~100 times a token. clang 14's builtin does not know "avxvnni" (the fuzz build), which reads CPUID. The YMM
 * state it uses is the AVX2 tier's, whose check covers the OS's support. */
static bool cpu_avx_vnni(void) {
#if defined(__clang__)
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1u);
#else
    return __builtin_cpu_supports("avxvnni");
#endif
}
#endif

static bool cpu_has(CpuFeature f) {
#if defined(__x86_64__)
    switch (f) {
    case CPU_VNNI: return cpu_tier() == TIER_AVX512 && __builtin_cpu_supports("avx512vnni");
    case CPU_BF16: return cpu_tier() == TIER_AVX512 && __builtin_cpu_supports("avx512bf16");
    case CPU_AVXVNNI: return cpu_tier() >= TIER_AVX2 && cpu_avx_vnni();
    case CPU_DOTPROD: break;
    }
#elif defined(__aarch64__) && defined(__linux__)
    if (f == CPU_DOTPROD) return cpu_tier() == TIER_NEON && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP);
#elif defined(__aarch64__) && defined(__APPLE__)
    int on = 0;
    size_t len = sizeof on;
    if (f == CPU_DOTPROD)
        return cpu_tier() == TIER_NEON && sysctlbyname("hw.optional.arm.FEAT_DotProd", &on, &len, NULL, 0) == 0 && on;
#else
    (void)f;
#endif
    return false;
}

const char *nf_cpu_kernels(void) {
    switch (cpu_tier()) {
    case TIER_AVX512: return cpu_has(CPU_BF16) ? "avx512-vnni-bf16" : cpu_has(CPU_VNNI) ? "avx512-vnni" : "avx512";
    case TIER_AVX2: return cpu_has(CPU_AVXVNNI) ? "avx2-vnni" : "avx2";
    case TIER_NEON: return cpu_has(CPU_DOTPROD) ? "neon-dotprod" : "neon";
    case TIER_BASELINE: break;
    }
    return "portable";
}

int nf_cpu_check_env(NfError *err) {
    const char *force = getenv("NF_CPU");
    if (force && strcmp(force, "baseline") != 0 && strcmp(force, "avx2") != 0 && strcmp(force, "native") != 0)
        return nf_fail(err, NF_ERR_USAGE, "NF_CPU must be baseline, avx2 or native, not '%s'", force);
    return 0;
}

/* 0: OMP_NUM_THREADS when it is set (the dashboard sets it so that runs side
 * by side share the cores: runqueue.h), else one thread per core */
void nf_set_threads(int n) {
    if (n > 0)
        omp_set_num_threads(n);
    else if (nf_threads_unchosen(n))
        omp_set_num_threads(omp_get_num_procs());
}

bool nf_threads_unchosen(int n) { return n <= 0 && !getenv("OMP_NUM_THREADS"); }

int nf_threads(void) { return omp_get_max_threads(); }

bool nf_row_products_thread_invariant(void) { return cpu_tier() != TIER_BASELINE; }

double nf_gemm_peak_gflops(int n) {
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
    for (size_t i = 0; i < nn; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) { /* the best of five: the first warms caches and oneDNN's JIT */
        double t0 = omp_get_wtime();
        dnnl_sgemm('N', 'T', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double gflops = 2.0 * n * nn / (omp_get_wtime() - t0) / 1e9;
        if (gflops > best) best = gflops;
    }
    free(a), free(b), free(c);
    return best;
}

/* Scratch that starts on a cache line (its contents undefined), so the
 * kernels' 64-byte loads of its rows do not straddle two lines; free() it. */
static void *line_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

/* Dot product with 8 independent partial sums: vectorizes without -ffast-math. */
static inline float dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* dot_f32 with b in bfloat16, each value widened exactly */
static inline float dot_f32_bf16(const float *a, const uint16_t *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * bf16_to_f32(b[i + k]);
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * bf16_to_f32(b[i]);
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

#define READ_PASSES 10
/* The buffer the read passes sum: as the GEMV reads weights, whole cache lines, with the same tier's dot product,
 * from memory allocated as the weights are (nf_alloc: transparent huge pages). In 4 KiB pages the same reads ran at
 * 53-63 GB/s where huge pages gave 73-76 (AMD EPYC VM, docs/performance.md): a bound measured so would understate
 * what the weights can be read at, and bandwidth_use came out above 1. */
int nf_read_buffer_init(NfReadBuffer *r, size_t bytes) {
    r->n = bytes / sizeof(float) / 16 * 16;
    if (!(r->buf = nf_alloc_unzeroed(r->n * sizeof(float), NULL))) return -1;
    float *buf = r->buf;
    size_t i, n = r->n;
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) buf[i] = 1.0f; /* pages placed by the threads that read them */
    return 0;
}

double nf_read_buffer_pass(NfReadBuffer *r) {
    CpuTier tier = cpu_tier();
    const float *buf = r->buf;
    size_t n = r->n;
    double t0 = omp_get_wtime(), sum = 0.0;
    int chunks = omp_get_max_threads() * 16, c;
    size_t per_chunk = n / chunks / 16 * 16; /* whole cache lines */
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (c = 0; c < chunks; c++) {
        size_t start = per_chunk * c, len = c == chunks - 1 ? n - start : per_chunk;
        const float *b = buf + start;
        sum += tier != TIER_BASELINE ? TIER_KERNEL(tier, dot)(b, b, (int)len) : dot_f32(b, b, (int)len);
    }
    double gbytes_s = (double)n * sizeof(float) / (omp_get_wtime() - t0) / 1e9;
    return sum > 0 ? gbytes_s : 0.0; /* the sum used, so the reads stay */
}

void nf_read_buffer_free(NfReadBuffer *r) {
    free(r->buf);
    r->buf = NULL;
}

NfReadSpeed nf_memory_read_gbytes_s(size_t bytes) {
    NfReadBuffer r;
    if (nf_read_buffer_init(&r, bytes) != 0) return (NfReadSpeed){0.0, 0.0};
    double passes[READ_PASSES];
    for (int rep = 0; rep < READ_PASSES; rep++) passes[rep] = nf_read_buffer_pass(&r); /* a shared machine's vary */
    nf_read_buffer_free(&r);
    double median = nf_sort_median(passes, READ_PASSES);
    return passes[0] > 0 ? (NfReadSpeed){passes[READ_PASSES - 1], median} : (NfReadSpeed){0.0, 0.0};
}

/* sum a[i] b[i] c[i], as dot_f32 */
static inline float dot3_f32(const float *a, const float *b, const float *c, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k] * c[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i] * c[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Dot of n Q8 values starting at flat element `start` of a tensor with fp32 x.
 * Groups run over the flattened tensor, so a row need not start on a group
 * boundary (llama2.c only requires dim, not hidden_dim, to be a multiple). */
static inline float dot_q8(const Tensor *w, size_t start, const float *x, int n) {
    const int8_t *q = w->q + start;
    size_t gs = (size_t)w->group_size;
    float s = 0.0f;
    int j = 0;
    while (j < n) {
        size_t flat = start + (size_t)j;
        int seg = (int)(gs - flat % gs);
        if (seg > n - j) seg = n - j;
        float acc = 0.0f;
        for (int k = 0; k < seg; k++) acc += (float)q[j + k] * x[j + k];
        s += acc * tensor_q8_scale(w, flat / gs);
        j += seg;
    }
    return s;
}

/* Units of `unit` rows (the last of a product may be short), laid end to end
 * over the products: how many there are, and which product unit `at` falls in
 * (at becomes the unit's index within it). */
static int product_units(const NfProduct *p, int count, int unit) {
    int units = 0;
    for (int k = 0; k < count; k++) units += (p[k].out_dim + unit - 1) / unit;
    return units;
}

static int product_of(const NfProduct *p, int count, int unit, int *at) {
    int k = 0;
    while (k < count - 1 && *at >= (p[k].out_dim + unit - 1) / unit) *at -= (p[k++].out_dim + unit - 1) / unit;
    return k;
}

/* A GEMV's work: the products' rows in blocks of GEMV_BLOCK (product_units(p, count, GEMV_BLOCK) of them), one
 * pass of the threads over all of them. Block b's product, its first row r0 and its rows nr. */
#define GEMV_BLOCK 16
static int gemv_block(const NfProduct *p, int count, int b, int *r0, int *nr) {
    int k = product_of(p, count, GEMV_BLOCK, &b);
    *r0 = b * GEMV_BLOCK;
    *nr = p[k].out_dim - *r0 < GEMV_BLOCK ? p[k].out_dim - *r0 : GEMV_BLOCK;
    return k;
}

/* A thread takes GEMV blocks in claims of about this many weight bytes (block_claims.h): a claim is a locked
 * instruction, and SmolLM2's q8 blocks (16 rows of 576 values, 9 KiB) taken one at a time gave back part of the
 * gain (229 and 241 tok/s against 231-253 in claims of 32-256 KiB, docs/performance.md, "Threads that even out");
 * the threads still end within a claim, ~2 us, of each other. */
#define GEMV_CLAIM_BYTES ((size_t)64 << 10)
static int gemv_blocks_per_claim(size_t row_bytes) {
    size_t per = GEMV_CLAIM_BYTES / (GEMV_BLOCK * row_bytes);
    return per < 1 ? 1 : (int)per;
}

/* A Q8 weight row's bytes: dim int8 values and a scale (of w's: fp32 or fp16) per group of gs */
static size_t q8_row_bytes(const Tensor *w, int dim, int gs) {
    return (size_t)dim + (size_t)(dim / gs) * tensor_q8_scale_bytes(w);
}

/* A GEMV's products and its one row x: fp32 (x) or quantized (xq, xs, xo: quantize_int8's) */
typedef struct {
    const NfProduct *p;
    int count;
    int n;  /* x's width, each weight row's */
    int gs; /* the quantized x's group size */
    CpuTier tier;
    const float *x;    /* (n) */
    const int8_t *xq;  /* (n) */
    const float *xs;   /* (n / gs) */
    const int32_t *xo; /* (n / gs) */
} Gemv;

/* out[k] (rows_k) = W[k] (rows_k, n) x for one row x (a vector tier's): block b */
static void gemv_f32_block(void *ctx, int b) {
    const Gemv *g = ctx;
    int r0, nr, k = gemv_block(g->p, g->count, b, &r0, &nr);
    TIER_KERNEL(g->tier, dots)(g->p[k].out + r0, g->p[k].w->f32 + (size_t)r0 * g->n, (size_t)g->n, g->x, nr, g->n);
}

static void gemv_f32_simd(NfTeam *team, const NfProduct *p, int count, const float *x, int n, CpuTier tier) {
    Gemv g = {.p = p, .count = count, .n = n, .tier = tier, .x = x};
    block_claims_run(team, product_units(p, count, GEMV_BLOCK), gemv_blocks_per_claim((size_t)n * sizeof(float)),
                     gemv_f32_block, &g);
}

/* ONE_ROW_NO_REGION: a generated row's small steps (its x quantized for Q8 products, its bias, RoPE and SwiGLU) run
 * outside any OpenMP region. A region whose if clause leaves it to one thread still costs ~1.2 us on the 2-core VM
 * (libgomp starts a team of one), and a SmolLM2 token took ~210 of them, ~6% of its time (docs/performance.md,
 * "Decode's own team"). */
/* x (n rows of `groups` groups of gs) quantized per group: xs = max |x| /
 * 127 and x / xs rounded to nearest even, as avx512_quantize_q8 does for the
 * VNNI kernel; here the values are kept as int16, so that each group's
 * integer dot product below compiles to pmaddwd (the compiler does not
 * vectorize int8 by int8 dot products as well). */
static void quantize_q16_rows(int16_t *xq, float *xs, const float *x, int n, int groups, int gs) {
    int i;
#pragma omp parallel for schedule(static) if (n > 1)
    for (i = 0; i < n; i++)
        for (size_t g = (size_t)i * groups; g < (size_t)(i + 1) * groups; g++) {
            const float *xg = x + g * gs;
            float max = 0.0f;
            for (int k = 0; k < gs; k++) max = fabsf(xg[k]) > max ? fabsf(xg[k]) : max;
            float scale = max / 127.0f, inv = scale > 0 ? 1.0f / scale : 0.0f;
            for (int k = 0; k < gs; k++) xq[g * gs + k] = (int16_t)lrintf(xg[k] * inv);
            xs[g] = scale;
        }
}

/* The portable twin of vnni_q8_row: out[i * out_stride] = w row . x row i
 * for n rows of x quantized by quantize_q16_rows, each group's dot product
 * in integers (which the compiler vectorizes: integer sums may be
 * reordered, float sums may not). */
static void q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int16_t *xq, const float *xs,
                   int n, int dim, int gs) {
    int groups = dim / gs;
    for (int i = 0; i < n; i++) {
        const int16_t *xi = xq + (size_t)i * dim;
        const float *xsi = xs + (size_t)i * groups;
        float sum = 0.0f;
        for (int g = 0; g < groups; g++) {
            int32_t dot = 0;
            for (int k = g * gs; k < (g + 1) * gs; k++) dot += (int16_t)wr[k] * xi[k];
            sum += (float)dot * (ws[g] * xsi[g]);
        }
        out[(size_t)i * out_stride] = sum;
    }
}

/* out[k] (n, rows_k) = x (n, dim) W[k]^T for Q8 W whose groups of gs values
 * tile each row: x is quantized the same way (one scale per group), once for
 * all the products, so each group's dot product is integer arithmetic:
 * AVX-512 VNNI where the CPU has it and gs is 32 (a GGUF's Q8_0) or a
 * multiple of 64, else AVX2 (with AVX-VNNI where present) for gs a multiple
 * of 32, NEON (with DotProd where present) for gs a multiple of 16, else the
 * portable loop. */
typedef enum { Q8_PORTABLE, Q8_NEON, Q8_AVX2, Q8_AVX512_VNNI } Q8Kernel;

static Q8Kernel q8_kernel(int gs) {
    if (cpu_has(CPU_VNNI) && (gs % 64 == 0 || gs == 32)) return Q8_AVX512_VNNI;
    if (cpu_tier() >= TIER_AVX2 && gs % 32 == 0) return Q8_AVX2;
    if (cpu_tier() == TIER_NEON && gs % 16 == 0) return Q8_NEON;
    return Q8_PORTABLE;
}

/* x's groups quantized to int8 for an int8 kernel (not Q8_PORTABLE); xo: AVX-512 VNNI's offsets */
static void quantize_int8(Q8Kernel kernel, int8_t *xq, float *xs, int32_t *xo, const float *x, int groups, int gs) {
#if defined(__x86_64__)
    if (kernel == Q8_AVX512_VNNI)
        avx512_quantize_q8(xq, xs, xo, x, (size_t)groups, gs);
    else
        avx2_quantize_q8(xq, xs, x, (size_t)groups, gs);
#else
    (void)kernel, (void)xo;
    neon_quantize_q8(xq, xs, x, (size_t)groups, gs);
#endif
}

/* One weight row against n rows of x quantized by quantize_int8; dots: the
 * tier's dot-product instruction (AVX-VNNI for Q8_AVX2, DotProd for Q8_NEON) */
static void int8_q8_row(Q8Kernel kernel, bool dots, float *out, size_t out_stride, const int8_t *wr, const float *ws,
                        const int8_t *xq, const float *xs, const int32_t *xo, int n, int dim, int gs) {
#if defined(__x86_64__)
    if (kernel == Q8_AVX512_VNNI)
        vnni_q8_row(out, out_stride, wr, ws, xq, xs, xo, n, dim, gs);
    else
        avx2_q8_row(out, out_stride, wr, ws, xq, xs, n, dim, gs, dots);
#else
    (void)kernel, (void)xo;
    neon_q8_row(out, out_stride, wr, ws, xq, xs, n, dim, gs, dots);
#endif
}

/* Decode's Q8 products (one x row, groups of 64 or 32, AVX-512 VNNI), in gemv_f32_simd's blocks: block b */
static void q8_gemv_vnni_block(void *ctx, int b) {
#if defined(__x86_64__)
    const Gemv *g = ctx;
    int r0, nr, k = gemv_block(g->p, g->count, b, &r0, &nr), groups = g->n / g->gs;
    const Tensor *w = g->p[k].w;
    size_t at = (size_t)r0 * groups; /* the block's first scale */
    vnni_q8_gemv(g->p[k].out + r0, w->q + (size_t)r0 * g->n, w->scale ? w->scale + at : NULL,
                 w->scale_f16 ? w->scale_f16 + at : NULL, g->xq, g->xs, g->xo, nr, g->n, g->gs);
#else
    (void)ctx, (void)b;
#endif
}

static void q8_gemv_vnni(NfTeam *team, const NfProduct *p, int count, const int8_t *xq, const float *xs,
                         const int32_t *xo, int dim, int gs) {
    Gemv g = {.p = p, .count = count, .n = dim, .gs = gs, .xq = xq, .xs = xs, .xo = xo};
    block_claims_run(team, product_units(p, count, GEMV_BLOCK), gemv_blocks_per_claim(q8_row_bytes(p[0].w, dim, gs)),
                     q8_gemv_vnni_block, &g);
}

/* matmul_q8's products row by row, n rows of x quantized for kernel (int8, or int16 for Q8_PORTABLE) */
typedef struct {
    const NfProduct *p;
    int count;
    Q8Kernel kernel;
    bool dots;         /* int8_q8_row's */
    CpuTier tier;      /* widen_f16's */
    const void *xq;    /* (n, dim) int8 or int16 */
    const float *xs;   /* (n, dim / gs) */
    const int32_t *xo; /* (n, dim / gs): AVX-512 VNNI's offsets */
    int n, dim, gs;
} Q8Rows;

/* Weight row r of product k, its scales ws as fp32, against the n rows of x */
static void q8_rows_run(const Q8Rows *q, int k, int r, const float *ws) {
    const int8_t *wr = q->p[k].w->q + (size_t)r * q->dim;
    float *out = q->p[k].out + r;
    size_t ld = (size_t)q->p[k].out_dim;
    if (q->kernel != Q8_PORTABLE)
        int8_q8_row(q->kernel, q->dots, out, ld, wr, ws, q->xq, q->xs, q->xo, q->n, q->dim, q->gs);
    else
        q8_row(out, ld, wr, ws, q->xq, q->xs, q->n, q->dim, q->gs);
}

/* The most fp16 scales widened at once for the row kernels: a whole row's at least, as fp16 scales come in groups
 * of 32 (a GGUF's Q8_0: model.h) and no row is wider than NF_MAX_HIDDEN */
#define Q8_WIDENED_GROUPS (NF_MAX_HIDDEN / 32)

/* out = fp16 h widened to fp32, exactly: the tier's vector instructions, the tail (or the baseline tier) one by one */
static void widen_f16(float *out, const uint16_t *h, size_t n, CpuTier tier) {
    size_t i = tier != TIER_BASELINE ? TIER_KERNEL(tier, f16_widen)(out, h, n) : 0;
    for (; i < n; i++) out[i] = f16_to_f32(h[i]);
}

/* Weight rows r0 .. r0 + nr - 1 of product k against the n rows of x. fp16 scales are widened for the kernels
 * (exactly: the same sums) as many whole rows at a time as the buffer holds: decode's GEMV blocks at once, as one
 * widening a row, its call and its tail, cost the AVX2 tier ~5% of a 0.5B model's decode. */
static void q8_rows_range(const Q8Rows *q, int k, int r0, int nr) {
    const Tensor *w = q->p[k].w;
    size_t groups = (size_t)(q->dim / q->gs);
    if (w->scale) {
        for (int r = r0; r < r0 + nr; r++) q8_rows_run(q, k, r, w->scale + (size_t)r * groups);
        return;
    }
    float widened[Q8_WIDENED_GROUPS];
    int per = (int)(Q8_WIDENED_GROUPS / groups); /* rows a widening: at least 1 (above) */
    for (int r = r0; r < r0 + nr; r += per) {
        int rows = r0 + nr - r < per ? r0 + nr - r : per;
        widen_f16(widened, w->scale_f16 + (size_t)r * groups, (size_t)rows * groups, q->tier);
        for (int i = 0; i < rows; i++) q8_rows_run(q, k, r + i, widened + (size_t)i * groups);
    }
}

/* The weight rows of GEMV block b */
static void q8_rows_block(void *ctx, int b) {
    const Q8Rows *q = ctx;
    int r0, nr, k = gemv_block(q->p, q->count, b, &r0, &nr);
    q8_rows_range(q, k, r0, nr);
}

/* Whether every product's scales are fp32 (vnni_q8_gemv takes fp16 ones in groups of 32 only) */
static bool q8_scales_f32(const NfProduct *p, int count) {
    for (int k = 0; k < count; k++)
        if (!p[k].w->scale) return false;
    return true;
}

static void matmul_q8(NfTeam *team, const NfProduct *p, int count, const float *x, int n, int dim) {
    int gs = p[0].w->group_size, groups = dim / gs;
    Q8Kernel kernel = q8_kernel(gs);
    bool int8 = kernel != Q8_PORTABLE;
    bool dots = kernel == Q8_AVX2 ? cpu_has(CPU_AVXVNNI) : kernel == Q8_NEON && cpu_has(CPU_DOTPROD);
    size_t values = (size_t)n * dim, scales = (size_t)n * groups;
    /* int8 values (and an offset per group for AVX-512 VNNI), int16 values for the portable loop */
    void *xq = line_alloc(values * (int8 ? 1 : 2) + scales * (sizeof(float) + sizeof(int32_t)));
    if (!xq) { /* too little memory for the quantized input: the plain loop needs none */
        for (int k = 0; k < count; k++)
            for (int i = 0; i < n; i++)
                for (int r = 0; r < p[k].out_dim; r++)
                    p[k].out[(size_t)i * p[k].out_dim + r] = dot_q8(p[k].w, (size_t)r * dim, x + (size_t)i * dim, dim);
        return;
    }
    float *xs = (float *)((char *)xq + values * (int8 ? 1 : 2)); /* (n, groups) each, and so is xo */
    int32_t *xo = (int32_t *)(xs + scales);
    if (int8 && n == 1) { /* a generated row: ONE_ROW_NO_REGION */
        quantize_int8(kernel, (int8_t *)xq, xs, xo, x, groups, gs);
    } else if (int8) {
        int i;
#pragma omp parallel for schedule(static)
        for (i = 0; i < n; i++)
            quantize_int8(kernel, (int8_t *)xq + (size_t)i * dim, xs + (size_t)i * groups, xo + (size_t)i * groups,
                          x + (size_t)i * dim, groups, gs);
    } else {
        quantize_q16_rows(xq, xs, x, n, groups, gs);
    }
    if (n == 1 && kernel == Q8_AVX512_VNNI && (gs == 32 || (gs == 64 && q8_scales_f32(p, count)))) {
        q8_gemv_vnni(team, p, count, xq, xs, xo, dim, gs);
        free(xq);
        return;
    }
    Q8Rows rows = {.p = p,
                   .count = count,
                   .kernel = kernel,
                   .dots = dots,
                   .tier = cpu_tier(),
                   .xq = xq,
                   .xs = xs,
                   .xo = xo,
                   .n = n,
                   .dim = dim,
                   .gs = gs};
    if (n == 1) { /* read from memory: the threads even out (block_claims.h) */
        block_claims_run(team, product_units(p, count, GEMV_BLOCK),
                         gemv_blocks_per_claim(q8_row_bytes(p[0].w, dim, gs)), q8_rows_block, &rows);
    } else { /* a prompt's products are computation, split row by row as they are (claims cost them 1%) */
        int total = product_units(p, count, 1), row;
#pragma omp parallel for schedule(static)
        for (row = 0; row < total; row++) {
            int r = row, k = product_of(p, count, 1, &r);
            q8_rows_range(&rows, k, r, 1);
        }
    }
    free(xq);
}

/* The smallest weight matrix sgemm_by_weights transposes the product for */
#define SGEMM_STREAMED_BYTES ((size_t)1 << 20)
#define TRANSPOSE_ROWS       64 /* rows of out^T transposed back together: 64 x n floats, 48 KiB at n = 191 */

/* out (n, out_dim) = x (n, in_dim) W^T, row-major, W (out_dim, in_dim). For a few rows of x (a short prompt, a
 * chat turn) oneDNN's sgemm runs faster given the weights as its left operand, out^T = W x^T, so that is computed
 * and its n columns transposed back. Where the two orders break even depends on oneDNN's kernels (measured:
 * docs/performance.md, "Short prompts in fp32"): with AVX-512 the transposed order was 1.1-6x faster below 128
 * rows and even or faster up to 192 (1.2-1.5x for 1B-wide rows), slower at 256; with AVX2 1.3-1.4x at 16 rows,
 * even at 32-64, 10-15% slower at 96-112. Only for a matrix of SGEMM_STREAMED_BYTES or more: a small model's
 * prompts (llama2.c's 15M, matrices of 0.3-0.9 MB) ran 6-20% slower in the transposed order. */
static void sgemm_by_weights(float *out, const float *x, const float *w, int n, int in_dim, int out_dim) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int few_rows = (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 192 : 64;
    bool streamed = (size_t)out_dim * in_dim * sizeof(float) >= SGEMM_STREAMED_BYTES;
    float *t = streamed && n > 1 && n < few_rows ? line_alloc((size_t)n * out_dim * sizeof(float)) : NULL;
    if (!t) { /* many rows, a small matrix (or no memory for the transpose) */
        dnnl_sgemm('N', 'T', n, out_dim, in_dim, 1.0f, x, in_dim, w, in_dim, 0.0f, out, out_dim);
        return;
    }
    dnnl_sgemm('N', 'T', out_dim, n, in_dim, 1.0f, w, in_dim, x, in_dim, 0.0f, t, n); /* t (out_dim, n) */
    /* transposed back in blocks of TRANSPOSE_ROWS rows of t, which stay in the cache while the n rows of out each
     * take their run of the block's columns (a classifier's t, 32000 x n, read column by column, did not) */
    int blocks = (out_dim + TRANSPOSE_ROWS - 1) / TRANSPOSE_ROWS, b;
#pragma omp parallel for schedule(static)
    for (b = 0; b < blocks; b++) {
        int r0 = b * TRANSPOSE_ROWS, r1 = r0 + TRANSPOSE_ROWS < out_dim ? r0 + TRANSPOSE_ROWS : out_dim;
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++) out[(size_t)i * out_dim + r] = t[(size_t)r * n + i];
    }
    free(t);
}

void nf_matmuls(const NfProduct *p, int count, const float *x, int n, int in_dim, NfTeam *team) {
    bool f32 = true, q8_groups_tile_rows = true;
    for (int k = 0; k < count; k++) {
        const Tensor *w = p[k].w;
        f32 = f32 && w->dtype == NF_F32;
        q8_groups_tile_rows = q8_groups_tile_rows && w->dtype != NF_F32 && w->group_size == p[0].w->group_size &&
                              in_dim % w->group_size == 0;
    }
    CpuTier tier = cpu_tier();
    if (f32 && n == 1 && tier != TIER_BASELINE) {
        gemv_f32_simd(team, p, count, x, in_dim, tier);
        return;
    }
    if (q8_groups_tile_rows) {
        matmul_q8(team, p, count, x, n, in_dim);
        return;
    }
    for (int k = 0; k < count; k++) {
        const Tensor *w = p[k].w;
        int out_dim = p[k].out_dim;
        if (w->dtype == NF_F32) {
            sgemm_by_weights(p[k].out, x, w->f32, n, in_dim, out_dim);
            continue;
        }
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * in_dim;
            float *outr = p[k].out + (size_t)r * out_dim;
            int i;
#pragma omp parallel for schedule(static)
            for (i = 0; i < out_dim; i++) outr[i] = dot_q8(w, (size_t)i * in_dim, xr, in_dim);
        }
    }
}

void nf_matmul(float *out, const float *x, const Tensor *w, int n, int in_dim, int out_dim) {
    nf_matmuls(&(NfProduct){out, w, out_dim}, 1, x, n, in_dim, NULL);
}

void nf_rmsnorm(float *out, const float *x, const float *weight, int dim, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = weight[i] * (inv * x[i]);
}

/* row[i] = exp(row[i] - max) for i < n; returns their sum */
static float exp_shifted_sum(float *row, int n, float max, CpuTier tier) {
    if (tier != TIER_BASELINE) return TIER_KERNEL(tier, exp_shifted_sum)(row, n, max);
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        row[i] = expf(row[i] - max);
        sum += row[i];
    }
    return sum;
}

/* Softmax of row's first n values in place, zeros from n to width (an
 * attention row's keys past its position); returns the log-sum-exp. */
static float softmax_row(float *row, int n, int width, CpuTier tier) {
    if (tier != TIER_BASELINE) return TIER_KERNEL(tier, softmax_row)(row, n, width);
    float max = row[0];
    for (int i = 1; i < n; i++)
        if (row[i] > max) max = row[i];
    float sum = exp_shifted_sum(row, n, max, TIER_BASELINE), inv = 1.0f / sum;
    for (int i = 0; i < n; i++) row[i] *= inv;
    memset(row + n, 0, (size_t)(width - n) * sizeof(float));
    return max + logf(sum);
}

/* The backward of softmax_row times scale: dp = p (dp - p . dp) scale for
 * the first n values, zeros from n to width. */
static void softmax_backward_row(float *dp, const float *p, int n, int width, float scale, CpuTier tier) {
    if (tier != TIER_BASELINE) {
        TIER_KERNEL(tier, softmax_backward_row)(dp, p, n, width, scale);
        return;
    }
    float weighted = dot_f32(p, dp, n);
    for (int j = 0; j < n; j++) dp[j] = p[j] * (dp[j] - weighted) * scale;
    memset(dp + n, 0, (size_t)(width - n) * sizeof(float));
}

void nf_softmax(float *x, int n) { softmax_row(x, n, n, cpu_tier()); }

/* Scores of one query head against rows 0..rows-1 of its keys, and the
 * weighted sum of its values: the cache holds fp32 (kf, vf) or bf16 (kb,
 * vb), the other pair NULL. bf16 values are widened exactly, so both
 * caches share the arithmetic that follows. */
static void key_dots(float *sh, const float *kf, const uint16_t *kb, size_t ld, const float *qh, int rows, int hs,
                     CpuTier tier) {
    if (tier != TIER_BASELINE) {
        if (kb)
            TIER_KERNEL(tier, dots_bf16)(sh, kb, ld, qh, rows, hs);
        else
            TIER_KERNEL(tier, dots)(sh, kf, ld, qh, rows, hs);
        return;
    }
    for (int t = 0; t < rows; t++)
        sh[t] = kf ? dot_f32(qh, kf + (size_t)t * ld, hs) : dot_f32_bf16(qh, kb + (size_t)t * ld, hs);
}

static void value_sum(float *oh, const float *sh, const float *vf, const uint16_t *vb, size_t ld, int rows, int hs,
                      CpuTier tier) {
    if (tier != TIER_BASELINE) {
        if (vb)
            TIER_KERNEL(tier, weighted_sum_bf16)(oh, sh, vb, ld, rows, hs);
        else
            TIER_KERNEL(tier, weighted_sum)(oh, sh, vf, ld, rows, hs);
        return;
    }
    memset(oh, 0, (size_t)hs * sizeof(float));
    for (int t = 0; t < rows; t++) {
        float a = sh[t];
        if (vf)
            for (int i = 0; i < hs; i++) oh[i] += a * vf[(size_t)t * ld + i];
        else
            for (int i = 0; i < hs; i++) oh[i] += a * bf16_to_f32(vb[(size_t)t * ld + i]);
    }
}

/* One decode attention: the query heads' scores over positions 0..pos, their softmax and their sum of values */
typedef struct {
    float *out;
    const float *q, *kf, *vf; /* fp32 cache, or */
    const uint16_t *kb, *vb;  /* bf16 cache */
    NfKvLayout layout;
    float *scores; /* (n_heads, pos + 1) */
    int pos, n_heads, n_kv_heads, head_size;
} DecodeAttention;

/* Query head h: its own scores row and output, the same bits on whichever thread */
static void attention_decode_head(const DecodeAttention *a, int h, CpuTier tier) {
    int group = a->n_heads / a->n_kv_heads, pos = a->pos, hs = a->head_size;
    float scale = 1.0f / sqrtf((float)hs);
    size_t head = (size_t)(h / group) * a->layout.head_stride; /* this query head's kv head */
    float *sh = a->scores + (size_t)h * (pos + 1);
    key_dots(sh, a->kf ? a->kf + head : NULL, a->kb ? a->kb + head : NULL, a->layout.row_stride, a->q + (size_t)h * hs,
             pos + 1, hs, tier);
    for (int t = 0; t <= pos; t++) sh[t] *= scale;
    softmax_row(sh, pos + 1, pos + 1, tier);
    value_sum(a->out + (size_t)h * hs, sh, a->vf ? a->vf + head : NULL, a->vb ? a->vb + head : NULL,
              a->layout.row_stride, pos + 1, hs, tier);
}

/* A team thread's heads: an even split, as schedule(static) */
static void attention_decode_heads(void *ctx, int thread, int threads) {
    const DecodeAttention *a = ctx;
    CpuTier tier = cpu_tier();
    for (int h = a->n_heads * thread / threads; h < a->n_heads * (thread + 1) / threads; h++)
        attention_decode_head(a, h, tier);
}

static void attention_decode(const DecodeAttention *a, NfTeam *team) {
    if (team) {
        nf_team_run(team, omp_get_max_threads(), attention_decode_heads, (void *)a);
        return;
    }
    CpuTier tier = cpu_tier();
    int h;
#pragma omp parallel for schedule(static)
    for (h = 0; h < a->n_heads; h++) attention_decode_head(a, h, tier);
}

void nf_attention_decode(float *out, const float *q, const float *keys, const float *values, NfKvLayout layout,
                         float *scores, int pos, int n_heads, int n_kv_heads, int head_size, NfTeam *team) {
    DecodeAttention a = {out, q, keys, values, NULL, NULL, layout, scores, pos, n_heads, n_kv_heads, head_size};
    attention_decode(&a, team);
}

void nf_attention_decode_bf16(float *out, const float *q, const uint16_t *keys, const uint16_t *values,
                              NfKvLayout layout, float *scores, int pos, int n_heads, int n_kv_heads, int head_size,
                              NfTeam *team) {
    DecodeAttention a = {out, q, NULL, NULL, keys, values, layout, scores, pos, n_heads, n_kv_heads, head_size};
    attention_decode(&a, team);
}

void nf_kv_store(float *cache, uint16_t *cache_bf16, NfKvLayout layout, const float *x, int n, int pos, int n_kv_heads,
                 int head_size) {
    for (int r = 0; r < n; r++)
        for (int j = 0; j < n_kv_heads; j++) {
            const float *src = x + ((size_t)r * n_kv_heads + j) * head_size;
            size_t at = (size_t)j * layout.head_stride + (size_t)(pos + r) * layout.row_stride;
            if (cache_bf16)
                nf_bf16_round(cache_bf16 + at, src, (size_t)head_size);
            else
                memcpy(cache + at, src, (size_t)head_size * sizeof(float));
        }
}

void nf_kv_load(float *x, const float *cache, const uint16_t *cache_bf16, NfKvLayout layout, int n, int n_kv_heads,
                int head_size) {
    int t;
#pragma omp parallel for schedule(static) if (n >= 64)
    for (t = 0; t < n; t++)
        for (int j = 0; j < n_kv_heads; j++) {
            float *dst = x + ((size_t)t * n_kv_heads + j) * head_size;
            size_t at = (size_t)j * layout.head_stride + (size_t)t * layout.row_stride;
            if (cache_bf16)
                for (int i = 0; i < head_size; i++) dst[i] = bf16_to_f32(cache_bf16[at + i]);
            else
                memcpy(dst, cache + at, (size_t)head_size * sizeof(float));
        }
}

/* ---- training ops ------------------------------------------------------------ */

void nf_matmul_forward(float *out, const float *inp, const float *w, int N, int C, int OC) {
    sgemm_by_weights(out, inp, w, N, C, OC); /* a small batch's rows, as a prompt's */
}

#define BF16_KEPT_MAX 8 /* weight buffers with a kept bf16 copy (nf_bf16_keep): a LoRA base keeps 8 */

/* What oneDNN's matmul primitive runs with: its engine and stream, and its
 * working memory (the scratchpad), kept from call to call where the owner
 * lives long (left to oneDNN, it would map fresh pages at each call). */
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    void *scratchpad;
    size_t scratchpad_bytes;
} Onednn;

static bool onednn_open(Onednn *o) {
    memset(o, 0, sizeof *o);
    return dnnl_engine_create(&o->engine, dnnl_cpu, 0) == dnnl_success &&
           dnnl_stream_create(&o->stream, o->engine, dnnl_stream_default_flags) == dnnl_success;
}

static void onednn_close(Onednn *o) {
    if (o->stream) dnnl_stream_destroy(o->stream);
    if (o->engine) dnnl_engine_destroy(o->engine);
    free(o->scratchpad);
    memset(o, 0, sizeof *o);
}

/* Grows the kept scratchpad to at least bytes (its old contents are not
 * needed); false if memory runs out. */
static bool scratchpad_fits(Onednn *o, size_t bytes) {
    if (bytes <= o->scratchpad_bytes) return true;
    void *grown = line_alloc(bytes);
    if (!grown) return false;
    free(o->scratchpad);
    o->scratchpad = grown;
    o->scratchpad_bytes = bytes;
    return true;
}

/* C (M, N) = beta C + op(A) op(B), row-major as dnnl_sgemm's arguments, A
 * and B of `type` (f32 or bf16), C fp32, beta 0 or 1, through oneDNN's
 * matmul primitive. False when oneDNN refuses the shape (nothing is written). */
static bool matmul_primitive(Onednn *o, dnnl_data_type_t type, char ta, char tb, int M, int N, int K, const void *A,
                             int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t a_dims = {M, K}, b_dims = {K, N}, c_dims = {M, N};
    dnnl_dims_t a_strides = {ta == 'N' ? lda : 1, ta == 'N' ? 1 : lda};
    dnnl_dims_t b_strides = {tb == 'N' ? ldb : 1, tb == 'N' ? 1 : ldb}, c_strides = {ldc, 1};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t mem[4] = {NULL, NULL, NULL, NULL};
    const dnnl_memory_desc_t *pad_md = NULL;
    bool done = false;
    if (dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, type, a_strides) == dnnl_success &&
        dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, type, b_strides) == dnnl_success &&
        dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides) == dnnl_success &&
        dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) == dnnl_success &&
        dnnl_primitive_attr_create(&attr) == dnnl_success &&
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        (beta == 0.0f ||
         (dnnl_post_ops_create(&post) == dnnl_success && dnnl_post_ops_append_sum(post, 1.0f) == dnnl_success &&
          dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success)) &&
        /* oneDNN caches primitives by their description: creating one again is cheap */
        dnnl_primitive_desc_create(&pd, &desc, attr, o->engine, NULL) == dnnl_success &&
        dnnl_primitive_create(&prim, pd) == dnnl_success &&
        (pad_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)) != NULL &&
        scratchpad_fits(o, dnnl_memory_desc_get_size(pad_md)) &&
        dnnl_memory_create(&mem[0], &a_md, o->engine, (void *)A) == dnnl_success &&
        dnnl_memory_create(&mem[1], &b_md, o->engine, (void *)B) == dnnl_success &&
        dnnl_memory_create(&mem[2], &c_md, o->engine, C) == dnnl_success &&
        dnnl_memory_create(&mem[3], pad_md, o->engine, o->scratchpad) == dnnl_success) {
        dnnl_exec_arg_t args[4] = {
            {DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}, {DNNL_ARG_SCRATCHPAD, mem[3]}};
        done = dnnl_primitive_execute(prim, o->stream, 4, args) == dnnl_success &&
               dnnl_stream_wait(o->stream) == dnnl_success;
    }
    for (int i = 0; i < 4; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return done;
}

struct Bf16Context {
    Onednn dnnl;
    uint16_t *a, *b; /* rounded operands, max_floats each */
    size_t max_floats;
    struct {
        const float *w; /* (n) the fp32 weights */
        size_t n;
        uint16_t *copy; /* (n) them rounded */
    } kept[BF16_KEPT_MAX];
    int n_kept;
};

Bf16Context *nf_bf16_create(size_t max_floats) {
    Bf16Context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->max_floats = max_floats;
    /* on cache lines (nf_alloc): the products read these rows directly */
    ctx->a = nf_alloc_array(max_floats, sizeof(uint16_t), NULL);
    ctx->b = nf_alloc_array(max_floats, sizeof(uint16_t), NULL);
    if (!ctx->a || !ctx->b || !onednn_open(&ctx->dnnl)) {
        nf_bf16_free(ctx);
        return NULL;
    }
    return ctx;
}

void nf_bf16_free(Bf16Context *ctx) {
    if (!ctx) return;
    onednn_close(&ctx->dnnl);
    free(ctx->a);
    free(ctx->b);
    for (int i = 0; i < ctx->n_kept; i++) free(ctx->kept[i].copy);
    free(ctx);
}

/* AVX512-BF16's instruction where the CPU has it, else AVX2's integer
 * rounding, else the portable loop; each rounds the same way */
typedef enum { ROUND_PORTABLE, ROUND_AVX2, ROUND_AVX512BF16 } RoundKernel;

static RoundKernel round_kernel(void) {
    return cpu_has(CPU_BF16) ? ROUND_AVX512BF16 : cpu_tier() >= TIER_AVX2 ? ROUND_AVX2 : ROUND_PORTABLE;
}

static void round_bf16_serial(uint16_t *o, const float *x, size_t n, RoundKernel kernel) {
#if defined(__x86_64__)
    size_t i = kernel == ROUND_AVX512BF16 ? avx512bf16_round(o, x, n)
               : kernel == ROUND_AVX2     ? avx2_bf16_round(o, x, n)
                                          : 0;
#else
    size_t i = 0; /* aarch64: the portable loop (round_kernel() gives no other) */
    (void)kernel;
#endif
    for (; i < n; i++) o[i] = f32_to_bf16(x[i]);
}

void nf_bf16_round(uint16_t *out, const float *x, size_t n) { round_bf16_serial(out, x, n, round_kernel()); }

/* o = x rounded to bfloat16 (to nearest even), in chunks across threads */
#define ROUND_CHUNK 8192 /* a multiple of the AVX512-BF16 kernel's 32 */
static void round_bf16(uint16_t *o, const float *x, size_t n) {
    RoundKernel kernel = round_kernel();
    size_t chunks = (n + ROUND_CHUNK - 1) / ROUND_CHUNK, c;
#pragma omp parallel for schedule(static)
    for (c = 0; c < chunks; c++) {
        size_t at = c * ROUND_CHUNK;
        round_bf16_serial(o + at, x + at, n - at < ROUND_CHUNK ? n - at : ROUND_CHUNK, kernel);
    }
}

uint16_t *nf_bf16_keep(Bf16Context *ctx, const float *w, size_t n) {
    /* in huge pages (nf_alloc): AdamW rewrites all of it every step */
    uint16_t *copy = ctx->n_kept < BF16_KEPT_MAX ? nf_alloc_array(n, sizeof(uint16_t), NULL) : NULL;
    if (!copy) return NULL;
    round_bf16(copy, w, n);
    ctx->kept[ctx->n_kept].w = w, ctx->kept[ctx->n_kept].n = n, ctx->kept[ctx->n_kept].copy = copy;
    ctx->n_kept++;
    return copy;
}

/* The kept bf16 copy of x (count floats), if x lies inside kept weights; NULL if not. */
static const uint16_t *kept_copy(const Bf16Context *ctx, const float *x, size_t count) {
    uintptr_t start = (uintptr_t)x, end = (uintptr_t)(x + count);
    for (int i = 0; i < ctx->n_kept; i++) {
        uintptr_t w = (uintptr_t)ctx->kept[i].w;
        if (start >= w && end <= (uintptr_t)(ctx->kept[i].w + ctx->kept[i].n))
            return ctx->kept[i].copy + (start - w) / sizeof(float);
    }
    return NULL;
}

/* The same product in fp32, for operands too large for ctx's buffers or a
 * product oneDNN refuses in bf16: from A and B, or, for a weight with no
 * fp32 behind it (B NULL), from B's bf16 bits widened slice by slice. */
static void fallback_bf16(Bf16Context *ctx, char ta, char tb, int M, int N, int K, const float *A, int lda,
                          const float *B, const uint16_t *b_bits, int ldb, float beta, float *C, int ldc) {
    if (B) {
        dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* ctx->b is free (B needs no rounding): max_floats / 2 floats, room for a slice of B's rows */
    float *slice = (float *)(void *)ctx->b;
    int rows_of_b = tb == 'N' ? K : N, step = (int)(ctx->max_floats / 2 / (size_t)ldb);
    if (step < 1) { /* a context too small for one row (not one sized by activations_init): element by element */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float sum = 0.0f;
                for (int k = 0; k < K; k++)
                    sum += A[ta == 'N' ? (size_t)i * lda + k : (size_t)k * lda + i] *
                           bf16_to_f32(b_bits[tb == 'N' ? (size_t)k * ldb + j : (size_t)j * ldb + k]);
                C[(size_t)i * ldc + j] = beta == 0.0f ? sum : C[(size_t)i * ldc + j] + sum; /* beta is 0 or 1 */
            }
        return;
    }
    for (int r0 = 0; r0 < rows_of_b; r0 += step) {
        int rows = rows_of_b - r0 < step ? rows_of_b - r0 : step;
        for (size_t i = 0; i < (size_t)rows * ldb; i++) slice[i] = bf16_to_f32(b_bits[(size_t)r0 * ldb + i]);
        if (tb == 'T') /* B's rows are C's columns */
            dnnl_sgemm(ta, tb, M, rows, K, 1.0f, A, lda, slice, ldb, beta, C + r0, ldc);
        else /* B's rows are the summed index: the slices add up */
            dnnl_sgemm(ta, tb, M, N, rows, 1.0f, ta == 'N' ? A + r0 : A + (size_t)r0 * lda, lda, slice, ldb,
                       r0 == 0 ? beta : 1.0f, C, ldc);
    }
}

/* C (M, N) = beta C + op(A) op(B), row-major as dnnl_sgemm's arguments, with
 * A and B rounded to bf16. beta is 0 or 1. a_rounded: ctx->a already holds
 * A rounded (the previous call's A). b_bits: B already in bf16 (a kept copy,
 * or a weight held only in bf16: then B may be NULL), or NULL to round B.
 * Returns whether ctx->a holds A rounded afterwards (not when the operands
 * are too large for its buffers and sgemm ran instead). */
static bool gemm_bf16_b(Bf16Context *ctx, char ta, char tb, int M, int N, int K, const float *A, int lda,
                        const float *B, const uint16_t *b_bits, int ldb, float beta, float *C, int ldc,
                        bool a_rounded) {
    size_t a_count = (size_t)(ta == 'N' ? M : K) * lda, b_count = (size_t)(tb == 'N' ? K : N) * ldb;
    if (a_count > ctx->max_floats || (!b_bits && b_count > ctx->max_floats)) {
        fallback_bf16(ctx, ta, tb, M, N, K, A, lda, B, b_bits, ldb, beta, C, ldc);
        return false;
    }
    if (!a_rounded) round_bf16(ctx->a, A, a_count);
    if (!b_bits) round_bf16(ctx->b, B, b_count);
    if (!matmul_primitive(&ctx->dnnl, dnnl_bf16, ta, tb, M, N, K, ctx->a, lda, b_bits ? (const void *)b_bits : ctx->b,
                          ldb, beta, C, ldc))
        fallback_bf16(ctx, ta, tb, M, N, K, A, lda, B, b_bits, ldb, beta, C, ldc);
    return true;
}

static bool gemm_bf16(Bf16Context *ctx, char ta, char tb, int M, int N, int K, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc, bool a_rounded) {
    size_t b_count = (size_t)(tb == 'N' ? K : N) * ldb;
    /* a kept weight was rounded once already */
    return gemm_bf16_b(ctx, ta, tb, M, N, K, A, lda, B, kept_copy(ctx, B, b_count), ldb, beta, C, ldc, a_rounded);
}

void nf_matmul_forward_bf16(Bf16Context *ctx, float *out, const float *inp, const float *w, int N, int C, int OC) {
    gemm_bf16(ctx, 'N', 'T', N, OC, C, inp, C, w, C, 0.0f, out, OC, false);
}

void nf_matmul_backward_bf16(Bf16Context *ctx, float *dinp, NfWrite dinp_write, float *dw, NfWrite dw_write,
                             const float *dout, const float *inp, const float *w, int N, int C, int OC) {
    /* dout is A of both products: rounded once */
    bool dout_rounded =
        dinp && gemm_bf16(ctx, 'N', 'N', N, C, OC, dout, OC, w, C, dinp_write == NF_ADD ? 1.0f : 0.0f, dinp, C, false);
    if (dw) gemm_bf16(ctx, 'T', 'N', OC, C, N, dout, OC, inp, C, dw_write == NF_ADD ? 1.0f : 0.0f, dw, C, dout_rounded);
}

void nf_matmul_forward_bf16w(Bf16Context *ctx, float *out, const float *inp, const uint16_t *w, int N, int C, int OC) {
    gemm_bf16_b(ctx, 'N', 'T', N, OC, C, inp, C, NULL, w, C, 0.0f, out, OC, false);
}

void nf_matmul_backward_bf16w(Bf16Context *ctx, float *dinp, NfWrite dinp_write, const float *dout, const uint16_t *w,
                              int N, int C, int OC) {
    gemm_bf16_b(ctx, 'N', 'N', N, C, OC, dout, OC, NULL, w, C, dinp_write == NF_ADD ? 1.0f : 0.0f, dinp, C, false);
}

void nf_matmul_forward_add(float *out, const float *inp, const float *w, int N, int C, int OC) {
    dnnl_sgemm('N', 'T', N, OC, C, 1.0f, inp, C, w, C, 1.0f, out, OC);
}

/* A weight gradient with many rows and few columns, dw (OC, C) += dout^T
 * inp with OC >= TALL_ROWS and C <= NARROW_COLUMNS (a narrow model's
 * classifier: 32000 rows of 64-512), runs through oneDNN's matmul primitive:
 * 20-110% faster than sgemm on such shapes, where on every other weight
 * gradient of the 15M and 110M shapes sgemm was 1-5% faster. Its own engine
 * and stream per call cost nothing beside a product this size, and keep the
 * fp32 path free of state. */
#define TALL_ROWS      8192
#define NARROW_COLUMNS 512

static bool tall_weight_gradient(float *dw, float beta, const float *dout, const float *inp, int N, int C, int OC) {
    Onednn o;
    bool done = onednn_open(&o) && matmul_primitive(&o, dnnl_f32, 'T', 'N', OC, C, N, dout, OC, inp, C, beta, dw, C);
    onednn_close(&o);
    return done;
}

void nf_matmul_backward(float *dinp, NfWrite dinp_write, float *dw, NfWrite dw_write, const float *dout,
                        const float *inp, const float *w, int N, int C, int OC) {
    float dw_beta = dw_write == NF_ADD ? 1.0f : 0.0f;
    if (dinp) dnnl_sgemm('N', 'N', N, C, OC, 1.0f, dout, OC, w, C, dinp_write == NF_ADD ? 1.0f : 0.0f, dinp, C);
    if (dw && !(OC >= TALL_ROWS && C <= NARROW_COLUMNS && tall_weight_gradient(dw, dw_beta, dout, inp, N, C, OC)))
        dnnl_sgemm('T', 'N', OC, C, N, 1.0f, dout, OC, inp, C, dw_beta, dw, C);
}

#define ZERO_CHUNK 262144 /* floats: 1 MiB per memset */

void nf_zero(float *x, size_t n) {
    size_t chunks = (n + ZERO_CHUNK - 1) / ZERO_CHUNK, c;
#pragma omp parallel for schedule(static)
    for (c = 0; c < chunks; c++) {
        size_t at = c * ZERO_CHUNK;
        memset(x + at, 0, (n - at < ZERO_CHUNK ? n - at : ZERO_CHUNK) * sizeof(float));
    }
}

void nf_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
    int n;
#pragma omp parallel for schedule(static)
    for (n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float r = 1.0f / sqrtf(dot_f32(x, x, C) / C + eps);
        for (int i = 0; i < C; i++) y[i] = x[i] * r * weight[i];
        rstd[n] = r;
    }
}

#define RMS_COLUMNS 32 /* columns of the weight gradient per thread block */

void nf_rmsnorm_backward(float *dinp, float *dweight, NfWrite dweight_write, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int N, int C) {
    /* y = x r w, r = (mean x^2 + eps)^-1/2:
     *   dw += dy x r;   dx = r (dy w) - x r^3 / C * sum(dy w x) */
    if (dweight) {
        /* threads take blocks of columns and add the rows in order: the
         * same sums, bit for bit, on any number of threads */
        int blocks = (C + RMS_COLUMNS - 1) / RMS_COLUMNS, b;
#pragma omp parallel for schedule(static)
        for (b = 0; b < blocks; b++) {
            int i0 = b * RMS_COLUMNS, i1 = i0 + RMS_COLUMNS < C ? i0 + RMS_COLUMNS : C;
            if (dweight_write == NF_SET) memset(dweight + i0, 0, (size_t)(i1 - i0) * sizeof(float));
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                for (int i = i0; i < i1; i++) dweight[i] += dy[i] * x[i] * rstd[n];
            }
        }
    }
    if (!dinp) return;
    int n;
#pragma omp parallel for schedule(static)
    for (n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float r = rstd[n], dot = dot3_f32(dy, weight, x, C);
        float k = r * r * r * dot / C;
        for (int i = 0; i < C; i++) dx[i] += r * dy[i] * weight[i] - k * x[i];
    }
}

void nf_rope_table(float *rope, int positions, const ModelConfig *c) {
    int hs = config_head_size(c);
    for (int p = 0; p < positions; p++)
        for (int i = 0; i < hs; i += 2) {
            float angle = p * config_rope_freq(c, i / 2); /* as llama2.c's run.c computes it */
            rope[(size_t)p * hs + i] = cosf(angle);
            rope[(size_t)p * hs + i + 1] = sinf(angle);
        }
}

void nf_bias_forward(float *y, const float *bias, int N, int C) {
    if (N == 1) { /* a generated row: ONE_ROW_NO_REGION */
        for (int i = 0; i < C; i++) y[i] += bias[i];
        return;
    }
    int n;
#pragma omp parallel for schedule(static)
    for (n = 0; n < N; n++)
        for (int i = 0; i < C; i++) y[(size_t)n * C + i] += bias[i];
}

void nf_bias_backward(float *dbias, NfWrite write, const float *dy, int N, int C) {
    /* threads take blocks of columns and add the rows in order: the same sums on any number of threads */
    int blocks = (C + RMS_COLUMNS - 1) / RMS_COLUMNS, b;
#pragma omp parallel for schedule(static)
    for (b = 0; b < blocks; b++) {
        int i0 = b * RMS_COLUMNS, i1 = i0 + RMS_COLUMNS < C ? i0 + RMS_COLUMNS : C;
        if (write == NF_SET) memset(dbias + i0, 0, (size_t)(i1 - i0) * sizeof(float));
        for (int n = 0; n < N; n++)
            for (int i = i0; i < i1; i++) dbias[i] += dy[(size_t)n * C + i];
    }
}

/* Row bt of (B, T, n_heads, hs) x: every pair rotated by +angle (forward) or -angle (backward) */
static void rope_row(float *x, const float *rope, int bt, int T, int pos0, int n_heads, int hs, float sign) {
    const float *cs = rope + (size_t)(pos0 + bt % T) * hs;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + ((size_t)bt * n_heads + h) * hs;
        for (int i = 0; i < hs; i += 2) {
            float c = cs[i], s = sign * cs[i + 1], v0 = v[i], v1 = v[i + 1];
            v[i] = v0 * c - v1 * s;
            v[i + 1] = v0 * s + v1 * c;
        }
    }
}

static void rope_apply(float *x, const float *rope, int B, int T, int pos0, int n_heads, int hs, float sign) {
    if (B * T == 1) { /* a generated row: ONE_ROW_NO_REGION */
        rope_row(x, rope, 0, T, pos0, n_heads, hs, sign);
        return;
    }
    int bt;
#pragma omp parallel for schedule(static)
    for (bt = 0; bt < B * T; bt++) rope_row(x, rope, bt, T, pos0, n_heads, hs, sign);
}

void nf_rope_forward(float *x, const float *rope, int B, int T, int pos0, int n_heads, int head_size) {
    rope_apply(x, rope, B, T, pos0, n_heads, head_size, 1.0f);
}
void nf_rope_backward(float *dx, const float *rope, int B, int T, int pos0, int n_heads, int head_size) {
    rope_apply(dx, rope, B, T, pos0, n_heads, head_size, -1.0f);
}

/* Attention works head by head on (T, hs) slices of the (B, T, heads, hs)
 * tensors (rows `heads * hs` floats apart), one tile of ATT_TILE query rows
 * at a time. A tile's scores against every key it may see fit in an
 * (ATT_TILE, keys) scratch, so each row's softmax is computed whole, and only
 * its log-sum-exp is kept: backward recomputes the scores. The keys (and in
 * backward the values) are first transposed to (hs, keys) per kv head, so
 * every product of a tile reads its second operand by rows. */
#define ATT_TILE 132 /* 22 panels of PANEL_ROWS; 66 was 0-5% slower */

/* Floats per row of a tile or a transposed head: a whole number of cache
 * lines, and an odd one. Rows a power of two apart (256 keys: 1 KiB) fall
 * into a quarter of the L1 cache's sets, and a panel reads down columns of
 * such rows; the odd stride made the 15M shape's attention 3-7% faster. */
static size_t spread_row(int n) {
    size_t lines = ((size_t)n + 15) / 16;
    return 16 * (lines | 1);
}

/* forward: kt (B, NKV, hs, ld), then each thread's score tile (ATT_TILE, ld);
 * backward: each thread's p and dp tiles and its head's kt and vt */
size_t nf_attention_scratch_floats(int B, int keys, int NKV, int hs) {
    size_t ld = spread_row(keys), forward = (size_t)B * NKV * hs * ld + (size_t)omp_get_max_threads() * ATT_TILE * ld,
           backward = (size_t)omp_get_max_threads() * (2 * ATT_TILE + 2 * (size_t)hs) * ld;
    return forward > backward ? forward : backward;
}

/* The part of a tile's product that the causal mask leaves alive, for a
 * tile whose query row i sits at position q0 + i and sees keys 0 .. q0 + i:
 * the panel products skip the rest, sgemm computes it (zeros, or scores
 * that are never read). */
typedef enum {
    LIVE_COLUMNS,    /* c (query rows, keys): row i up to key q0 + i (scores) */
    LIVE_DEPTH_TO,   /* c (query rows, hs), sum over keys: row i's up to q0 + i (p v, dscore k) */
    LIVE_DEPTH_FROM, /* c (keys, hs), sum over query rows: key j's from row j - q0 (p^T dout, dscore^T q) */
} Live;

/* c (M, N) = alpha a b, or += with accumulate: a (M, S) read at
 * a[m a_row + s a_col] (one of the two is 1), b (S, N) by rows ldb apart.
 * AVX-512 and AVX2 run it panel by panel in registers (kernels_*.c), skipping
 * what `live` says is dead; otherwise oneDNN's sgemm runs it whole. */
static void tile_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                         int M, int N, int S, float alpha, bool accumulate, Live live, int q0, CpuTier tier) {
    if (tier == TIER_BASELINE) {
        bool by_rows = a_col == 1;
        dnnl_sgemm(by_rows ? 'N' : 'T', 'N', M, N, S, alpha, a, (dnnl_dim_t)(by_rows ? a_row : a_col), b,
                   (dnnl_dim_t)ldb, accumulate ? 1.0f : 0.0f, c, (dnnl_dim_t)ldc);
        return;
    }
    for (int r0 = 0; r0 < M; r0 += PANEL_ROWS) {
        int rows = M - r0 < PANEL_ROWS ? M - r0 : PANEL_ROWS, last = r0 + rows - 1, cols = N, s0 = 0, s1 = S;
        if (live == LIVE_COLUMNS && q0 + last + 1 < N) cols = q0 + last + 1;
        if (live == LIVE_DEPTH_TO && q0 + last + 1 < S) s1 = q0 + last + 1;
        if (live == LIVE_DEPTH_FROM && r0 - q0 > 0) s0 = r0 - q0;
        for (int n0 = 0; n0 < cols; n0 += PANEL_COLS) TIER_KERNEL(tier, panel_product)
        (c + (size_t)r0 * ldc + n0, ldc, a + (size_t)r0 * a_row, a_row, a_col, b + n0, ldb, rows,
         cols - n0 < PANEL_COLS ? cols - n0 : PANEL_COLS, s0, s1, alpha, accumulate);
    }
}

/* t (hs, n; rows ld floats apart) = x (n, hs; rows x_ld apart) transposed,
 * 16 rows of x at a time so both sides stay in L1 */
static void transpose_rows(float *t, size_t ld, const float *x, size_t x_ld, int n, int hs) {
    for (int j0 = 0; j0 < n; j0 += 16) {
        int j1 = j0 + 16 < n ? j0 + 16 : n;
        for (int d = 0; d < hs; d++)
            for (int j = j0; j < j1; j++) t[(size_t)d * ld + j] = x[(size_t)j * x_ld + d];
    }
}

void nf_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                          int q_start, int NH, int NKV, int hs, float *scratch) {
    float scale = 1.0f / sqrtf((float)hs);
    CpuTier tier = cpu_tier();
    int group = NH / NKV, tiles = (T + ATT_TILE - 1) / ATT_TILE, K = q_start + T, job, bkv;
    size_t q_ld = (size_t)NH * hs, kv_ld = (size_t)NKV * hs, ld = spread_row(K), head_keys = hs * ld;
    float *kt = scratch, *tile_scratch = kt + (size_t)B * NKV * head_keys; /* kt (B, NKV, hs, ld) */
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (bkv = 0; bkv < B * NKV; bkv++)
            transpose_rows(kt + bkv * head_keys, ld, k + ((size_t)bkv / NKV * K * NKV + bkv % NKV) * hs, kv_ld, K, hs);
#pragma omp for schedule(dynamic)
        for (job = 0; job < B * NH * tiles; job++) {
            int bh = job / tiles, b = bh / NH, h = bh % NH, kvh = h / group;
            int r0 = (job % tiles) * ATT_TILE, rows = T - r0 < ATT_TILE ? T - r0 : ATT_TILE, q0 = q_start + r0;
            int keys = q0 + rows;
            float *score = tile_scratch + (size_t)omp_get_thread_num() * ATT_TILE * ld;
            const float *qt = q + (((size_t)b * T + r0) * NH + h) * hs, *vb = v + ((size_t)b * K * NKV + kvh) * hs;
            /* score (rows, keys) = scale q k^T; row i sees keys 0 .. q0 + i */
            tile_product(score, ld, qt, q_ld, 1, kt + ((size_t)b * NKV + kvh) * head_keys, ld, rows, keys, hs, scale,
                         false, LIVE_COLUMNS, q0, tier);
            for (int i = 0; i < rows; i++) {
                float row_lse = softmax_row(score + i * ld, q0 + i + 1, keys, tier);
                if (lse) lse[(size_t)bh * T + r0 + i] = row_lse;
            }
            /* out (rows, hs) = softmax v */
            float *ot = out + (((size_t)b * T + r0) * NH + h) * hs;
            tile_product(ot, q_ld, score, ld, 1, vb, kv_ld, rows, hs, keys, 1.0f, false, LIVE_DEPTH_TO, q0, tier);
        }
    }
}

void nf_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                           const float *k, const float *v, int B, int T, int NH, int NKV, int hs, float *scratch) {
    float scale = 1.0f / sqrtf((float)hs);
    CpuTier tier = cpu_tier();
    int group = NH / NKV, bkv;
    size_t q_ld = (size_t)NH * hs, kv_ld = (size_t)NKV * hs, ld = spread_row(T), head_keys = hs * ld;
    /* one thread per (batch, kv head): the query heads sharing a kv head write the same dk/dv rows */
#pragma omp parallel for schedule(dynamic)
    for (bkv = 0; bkv < B * NKV; bkv++) {
        int b = bkv / NKV, kvh = bkv % NKV;
        /* this thread's p, dp (ATT_TILE, ld) and its head's kt, vt (hs, ld): transposed here, so they stay in cache */
        float *p = scratch + (size_t)omp_get_thread_num() * (2 * ATT_TILE * ld + 2 * head_keys),
              *dp = p + ATT_TILE * ld, *kt = dp + ATT_TILE * ld, *vt = kt + head_keys;
        size_t at_kv = ((size_t)b * T * NKV + kvh) * hs;
        const float *kb = k + at_kv;
        float *dkb = dk + at_kv, *dvb = dv + at_kv;
        transpose_rows(kt, ld, kb, kv_ld, T, hs);
        transpose_rows(vt, ld, v + at_kv, kv_ld, T, hs);
        for (int h = kvh * group; h < (kvh + 1) * group; h++)
            for (int r0 = 0; r0 < T; r0 += ATT_TILE) {
                int rows = T - r0 < ATT_TILE ? T - r0 : ATT_TILE, keys = r0 + rows;
                size_t at = ((size_t)b * T + r0) * NH + h;
                const float *qt = q + at * hs, *dot = dout + at * hs, *row_lse = lse + ((size_t)b * NH + h) * T + r0;
                float *dqt = dq + at * hs;
                /* the forward's softmax again: p = exp(scale q k^T - lse), 0 where a row may not look */
                tile_product(p, ld, qt, q_ld, 1, kt, ld, rows, keys, hs, scale, false, LIVE_COLUMNS, r0, tier);
                for (int i = 0; i < rows; i++) {
                    int seen = r0 + i + 1;
                    exp_shifted_sum(p + i * ld, seen, row_lse[i], tier);
                    memset(p + i * ld + seen, 0, (size_t)(keys - seen) * sizeof(float));
                }
                /* out = p v:  dp = dout v^T,  dv += p^T dout */
                tile_product(dp, ld, dot, q_ld, 1, vt, ld, rows, keys, hs, 1.0f, false, LIVE_COLUMNS, r0, tier);
                tile_product(dvb, kv_ld, p, 1, ld, dot, q_ld, keys, hs, rows, 1.0f, true, LIVE_DEPTH_FROM, r0, tier);
                /* softmax: dscore = p (dp - sum p dp), times scale for score = scale q k^T */
                for (int i = 0; i < rows; i++)
                    softmax_backward_row(dp + i * ld, p + i * ld, r0 + i + 1, keys, scale, tier);
                /* dq += dscore k,  dk += dscore^T q */
                tile_product(dqt, q_ld, dp, ld, 1, kb, kv_ld, rows, hs, keys, 1.0f, true, LIVE_DEPTH_TO, r0, tier);
                tile_product(dkb, kv_ld, dp, 1, ld, qt, q_ld, keys, hs, rows, 1.0f, true, LIVE_DEPTH_FROM, r0, tier);
            }
    }
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

#define SWIGLU_CHUNK 4096 /* elements per call of the AVX-512 kernels, a multiple of 16 */
/* Threads only from this many elements: one generated row (hidden_dim values, 14,336 for Llama 3 8B) takes a few
 * microseconds alone, less than waking threads, and an OpenMP region between the steps of decode's team (team.h)
 * would have both kinds of thread contend for the cores (Qwen2.5-0.5B's 4,864: 7% slower tokens in a prototype) */
#define SWIGLU_THREADED_MIN (4 * SWIGLU_CHUNK)

void nf_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    size_t i;
    CpuTier tier = cpu_tier();
    if (tier != TIER_BASELINE && n < SWIGLU_THREADED_MIN) { /* ONE_ROW_NO_REGION */
        TIER_KERNEL(tier, swiglu_forward)(out, gate, up, n);
        return;
    }
    if (tier != TIER_BASELINE) {
#pragma omp parallel for schedule(static)
        for (i = 0; i < n; i += SWIGLU_CHUNK)
            TIER_KERNEL(tier, swiglu_forward)(out + i, gate + i, up + i, n - i < SWIGLU_CHUNK ? n - i : SWIGLU_CHUNK);
        return;
    }
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void nf_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    /* silu(g) = g s(g);  silu'(g) = s(g) (1 + g (1 - s(g))) */
    size_t i;
    CpuTier tier = cpu_tier();
    if (tier != TIER_BASELINE) {
#pragma omp parallel for schedule(static)
        for (i = 0; i < n; i += SWIGLU_CHUNK) TIER_KERNEL(tier, swiglu_backward)
        (dgate + i, dup + i, dout + i, gate + i, up + i, n - i < SWIGLU_CHUNK ? n - i : SWIGLU_CHUNK);
        return;
    }
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) {
        float s = sigmoid(gate[i]);
        dup[i] = dout[i] * gate[i] * s;
        dgate[i] = dout[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
    }
}

double nf_cross_entropy(float *logits, const int *targets, int N, int V, float grad_scale) {
    /* per-row losses summed in order afterwards, so the total is bitwise reproducible */
    double *row_loss = malloc((size_t)N * sizeof(double));
    if (!row_loss) return NAN;
    CpuTier tier = cpu_tier();
    int n;
#pragma omp parallel for schedule(static)
    for (n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        if (targets[n] < 0) { /* masked: no loss, and a zero gradient */
            row_loss[n] = 0.0;
            if (grad_scale != 0.0f) memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        float max = row[0], target_logit = row[targets[n]], sum = 0.0f;
#pragma omp simd reduction(max : max)
        for (int i = 0; i < V; i++) max = row[i] > max ? row[i] : max;
        /* one pass of exp, kept in the row: softmax = e / sum */
        sum = exp_shifted_sum(row, V, max, tier);
        row_loss[n] = log((double)sum) + max - target_logit;
        if (grad_scale != 0.0f) {
            float scale = grad_scale / sum;
#pragma omp simd
            for (int i = 0; i < V; i++) row[i] *= scale;
            row[targets[n]] -= grad_scale;
        }
    }
    double total = 0.0;
    for (n = 0; n < N; n++) total += row_loss[n];
    free(row_loss);
    return total;
}

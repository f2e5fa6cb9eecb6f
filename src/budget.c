/* budget.c — a training run's memory estimate and budget (see budget.h).
 *
 * The estimate mirrors what train.c allocates: four fp32 arrays of the
 * trainable count (weights, gradients, AdamW m and v: alloc_state), the
 * activations (activations_bytes: the very buffer list activations_init
 * allocates), bf16's kept weights and operand buffers
 * (activations_keep_bf16_weights, bf16_operand_floats), a LoRA run's frozen
 * base (fp32: mapped, or copied when Q8 or imported; under --dtype bf16 held
 * in bf16, frozen_base_bytes, after a load that holds the fp32 weights while
 * they convert), and the program's own footprint. */
#define _GNU_SOURCE /* strcasecmp */
#include "budget.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checkpoint.h"
#include "model_open.h"
#include "train_model.h"

/* What the program holds beyond the arrays counted: its code and libraries,
 * OpenMP thread stacks, oneDNN's packing buffers, allocator slack. Measured as
 * peak RSS minus the counted arrays: 18 MiB on the tiniest shapes, 24-61 MiB
 * from 15M to 110M weights with 1 to 16 threads (docs/architecture.md,
 * "Memory budget", has the table); the constant sits in the middle, so a
 * realistic run's estimate lands within a few percent of its peak. */
#define RUNTIME_BYTES (48ull << 20)

void memory_estimate(const ModelConfig *c, const LoraConfig *lora, int B, int T, bool bf16, MemoryEstimate *e) {
    memset(e, 0, sizeof *e);
    uint64_t base_count = config_param_count(c);
    uint64_t trained = lora ? lora_param_count(c, lora) : base_count;
    e->weights = 4 * trained;
    e->grads = 4 * trained;
    e->optimizer = 8 * trained;
    e->base = !lora ? 0 : bf16 ? frozen_base_bytes(c) : 4 * base_count;
    uint64_t N = (uint64_t)B * (uint64_t)T;
    e->activations = activations_bytes(c, lora, B, T) + 2 * N * sizeof(int);
    /* bf16: two operand buffers (activations_init), and full training's kept copy of every weight (a LoRA
     * base held in bf16 is counted in base) */
    if (bf16) e->bf16 = 2 * 2 * bf16_operand_floats(c, lora, B, T) + (lora ? 0 : 2 * trained);
    e->runtime = RUNTIME_BYTES;
    e->total = e->weights + e->grads + e->optimizer + e->base + e->bf16 + e->activations + e->runtime;
    /* a LoRA base converted to bf16 first comes in as fp32 (an imported model's buffer), which goes page by page
     * as the bf16 copy grows, before anything else large is allocated: that peak may be the higher one */
    uint64_t load = lora && bf16 ? 4 * base_count + e->runtime : 0;
    e->total = load > e->total ? load : e->total;
}

void memory_estimate_ranks(MemoryEstimate *e, const TrainOptions *o) {
    if (!o->zero || o->world_size <= 1) return;
    uint64_t shard = (e->optimizer + (uint64_t)o->world_size - 1) / (uint64_t)o->world_size;
    e->total -= e->optimizer - shard;
    e->optimizer = shard;
}

/* The config the run will train, read without loading any weights. */
static bool run_config(const TrainOptions *o, ModelConfig *c) {
    if (o->resume && !o->use_lora) {
        bool is_lora;
        return o->ckpt && checkpoint_peek_config(o->ckpt, c, &is_lora);
    }
    if (o->model_path) { /* a mapping: the header is read, no weight is touched */
        NfError ignored;
        return model_peek_config(o->model_path, c, &ignored) == 0;
    }
    *c = o->init_config;
    return o->init && config_validate(c, NULL) == 0;
}

/* The estimate for a training run's options, with the model's config read
 * from where the run takes it (--init, the --model file's header, the
 * --resume checkpoint's header). Returns false (and leaves *e zero) when the
 * config cannot be read or is invalid: the loading code refuses that run
 * with its own message. */
static bool train_memory_estimate(const TrainOptions *o, MemoryEstimate *e) {
    memset(e, 0, sizeof *e);
    ModelConfig c;
    if (!run_config(o, &c)) return false;
    if (o->use_lora && lora_config_validate(&o->lora, &c, NULL) != 0) return false;
    /* --seq 0 means the model's seq_len; a longer --seq is refused later, so it is sized at seq_len */
    int T = o->seq > 0 && o->seq < c.seq_len ? (int)o->seq : c.seq_len;
    memory_estimate(&c, o->use_lora ? &o->lora : NULL, (int)o->batch, T, o->bf16, e);
    memory_estimate_ranks(e, o);
    return true;
}

int memory_budget_check(const MemoryEstimate *e, uint64_t ranks, uint64_t budget, const char *remedies, NfError *err) {
    if (ranks < 1) ranks = 1;
    if (budget == 0 || e->total * ranks <= budget) return 0;
    char total[32], limit[32], state[32], acts[32], other[32], here[64] = "";
    if (ranks > 1)
        snprintf(here, sizeof here, " for each of the %llu ranks on this machine", (unsigned long long)ranks);
    budget_format(e->total, total, sizeof total);
    budget_format(budget, limit, sizeof limit);
    budget_format(e->weights + e->grads + e->optimizer, state, sizeof state);
    budget_format(e->activations, acts, sizeof acts);
    budget_format(e->base + e->bf16 + e->runtime, other, sizeof other);
    return nf_fail(err, NF_ERR_MEMORY,
                   "this run needs about %s%s (weights, gradients and AdamW state %s, activations %s, other %s), "
                   "more than the memory budget of %s (--max-memory, default 80%% of this machine's memory): use %s, "
                   "or a larger --max-memory",
                   total, here, state, acts, other, limit, remedies);
}

int train_memory_check(const TrainOptions *o, MemoryEstimate *e, NfError *err) {
    /* the ranks of a run on one machine share its memory: each must fit its share of the budget */
    if (!train_memory_estimate(o, e)) return 0;
    return memory_budget_check(e, o->ranks_here > 1 ? (uint64_t)o->ranks_here : 1, o->max_memory,
                               "a smaller model, --batch or --seq, fewer ranks, --zero 1", err);
}

/* A number from a file's first line ("max" and anything else: 0). */
static uint64_t read_number_file(const char *path) {
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) v = 0;
        fclose(f);
    }
    return v;
}

uint64_t budget_default(void) {
    uint64_t total = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) total = (uint64_t)kb * 1024;
        fclose(f);
    }
    /* a container's limit is smaller than the machine it runs on (v2, then v1) */
    uint64_t limits[] = {read_number_file("/sys/fs/cgroup/memory.max"),
                         read_number_file("/sys/fs/cgroup/memory/memory.limit_in_bytes")};
    for (int i = 0; i < 2; i++)
        if (limits[i] > 0 && (total == 0 || limits[i] < total)) total = limits[i];
    return total / 5 * 4;
}

int budget_parse_size(const char *text, const char *flag, uint64_t *bytes, NfError *err) {
    if (strcasecmp(text, "none") == 0) {
        *bytes = 0;
        return 0;
    }
    char *end;
    double v = strtod(text, &end);
    /* decimal digits only: strtod would also take spaces, signs, inf, nan and 0x1p3 */
    bool number = end != text && (isdigit((unsigned char)text[0]) || text[0] == '.'), hex = strpbrk(text, "xX") != NULL;
    double unit = 1;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, end[0] & ~0x20) : NULL;
    if (u && *end) {
        unit = ldexp(1.0, 10 * (int)(u - units + 1));
        end++;
        if ((end[0] & ~0x20) == 'I' && (end[1] & ~0x20) == 'B')
            end += 2;
        else if ((end[0] & ~0x20) == 'B')
            end++;
    }
    double b = v * unit;
    if (!number || hex || *end || !isfinite(b) || b < 0 || b >= 0x1p63 || (b > 0 && b < 1))
        return nf_fail(err, NF_ERR_USAGE, "--%s '%s' is not a size: give e.g. 8G, 512M, 1.5T or none", flag, text);
    *bytes = (uint64_t)b;
    return 0;
}

void budget_format(uint64_t bytes, char *out, size_t cap) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 6) v /= 1024, u++;
    if (u == 0)
        snprintf(out, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(out, cap, "%.1f %s", v, units[u]);
}

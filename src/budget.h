/* budget.h — the memory budget of a training run: what it will hold at its
 * peak (an estimate made from the shape and options alone, before anything
 * large is allocated), the budget it must fit (--max-memory, by default a
 * share of the machine's memory) and the refusal when it does not. `train`
 * checks itself with it, and the dashboard checks a run's words with the
 * same code (train_command_check) before any child starts. Also sizes in
 * human units ("8G", "512M") both ways. */
#ifndef NF_BUDGET_H
#define NF_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "lora.h"
#include "model.h"
#include "train.h"

/* Bytes a training run holds, by what holds them. Anonymous memory only:
 * the mapped token files (and a checkpoint or model file while it is being
 * read) are page cache the kernel can drop, and are not counted. */
typedef struct {
    uint64_t weights;     /* the trained weights, fp32 (LoRA: the adapters) */
    uint64_t grads;       /* their gradients, fp32 */
    uint64_t optimizer;   /* AdamW's m and v, fp32 */
    uint64_t base;        /* LoRA: the frozen base model's weights, fp32 (bf16 under --dtype bf16) */
    uint64_t bf16;        /* --dtype bf16: the rounded operands, and full training's kept bf16 weights */
    uint64_t activations; /* activations_bytes, and the batch's tokens and targets */
    uint64_t runtime;     /* the program itself: code, libraries, thread stacks, oneDNN's buffers */
    uint64_t total;       /* the peak: the sum above, or a bf16 LoRA base's fp32 load if higher */
} MemoryEstimate;

/* The estimate for a model of config c trained on (B, T) batches; lora NULL
 * for full training. */
void memory_estimate(const ModelConfig *c, const LoraConfig *lora, int B, int T, bool bf16, MemoryEstimate *e);

/* One rank's estimate: --zero 1 leaves it its shard of AdamW's m and v (1 / world_size). */
void memory_estimate_ranks(MemoryEstimate *e, const TrainOptions *o);

/* Refuses (NF_ERR_MEMORY, naming --max-memory, the estimate's parts and the
 * budget) an estimate over budget (0: no limit) when `ranks` processes like
 * it share this machine; remedies says what the user may change ("a smaller
 * model, --batch or --seq"). `train` and `benchmark --train` both use it. */
int memory_budget_check(const MemoryEstimate *e, uint64_t ranks, uint64_t budget, const char *remedies, NfError *err);

/* Refuses (NF_ERR_MEMORY, naming --max-memory, the estimate and the budget)
 * a run whose estimate exceeds o->max_memory (0: no limit). *e gets the
 * estimate (zero when unknown). */
int train_memory_check(const TrainOptions *o, MemoryEstimate *e, NfError *err);

/* The default budget: 80% of the machine's memory (MemTotal, or a smaller
 * cgroup limit); 0 (no limit) when neither can be read. */
uint64_t budget_default(void);

/* "8G", "512M", "1.5T", "65536" (bytes), binary units (K = 1024), an
 * optional B or iB after the letter; "none" or "0" means no limit (0).
 * Errors name the flag. */
int budget_parse_size(const char *text, const char *flag, uint64_t *bytes, NfError *err);

/* bytes as "1.5 GiB" (or "512 MiB", "4 KiB", "100 B"). */
void budget_format(uint64_t bytes, char *out, size_t cap);

#endif

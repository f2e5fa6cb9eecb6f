/* main.c — `neuralforge <command> [flags]`: finds the command and runs it. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "commands.h"
#include "dist.h"
#include "wait_policy.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv, NfOut *out);
    const char *summary;
    /* runs many OpenMP parallel regions: worth one re-exec at start-up for the wait policy (wait_policy.h); the
     * others would only pay that re-exec's start-up time, tens of milliseconds with oneDNN and MPI loaded */
    bool parallel;
} Command;

static const Command COMMANDS[] = {
    {"generate", cmd_generate, "generate text from a model (NDJSON token stream, or --text)", true},
    {"chat", cmd_chat, "chat with a model: a user message a line of stdin, its chat template, the KV cache kept", true},
    {"info", cmd_info, "describe a model file and/or a tokenizer", false},
    {"train", cmd_train, "train a model: from scratch (--init) or fine-tuning (--model)", true},
    {"eval", cmd_eval, "mean loss and perplexity of a model or checkpoint on token data", true},
    {"export", cmd_export, "write a checkpoint, model or LoRA adapters as llama2.c, GGUF, safetensors or PEFT", false},
    {"serve", cmd_serve, "the web dashboard: projects, live training charts, generation, export", true},
    {"import", cmd_import, "read a GGUF or Hugging Face Llama model into a llama2.c model file", false},
    {"tokenize", cmd_tokenize, "turn a text file into llama2.c uint16 token data", false},
    {"ingest", cmd_ingest, "turn a tree of .txt/.md/.csv/.jsonl files into token shards, loss masks and a manifest",
     false},
    {"tokenizer-train", cmd_tokenizer_train, "learn a BPE tokenizer.bin (byte fallback) from text files", false},
    {"benchmark", cmd_benchmark, "time training steps or generation on this machine", true},
};

static void print_usage(void) {
    fprintf(stderr, "usage: neuralforge <command> [flags]   (neuralforge <command> --help for its flags)\n\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(stderr, "  %-15s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    if (!dist_has_mpi())
        fprintf(stderr, "\nThis build has no MPI: train runs as one process (no --processes, no mpirun).\n");
}

int main(int argc, char **argv) {
    NfOut out = {.stream = stdout, .rank = -1};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_usage();
        if (argc >= 2) return 0;
        NfError err;
        nf_fail(&err, NF_ERR_USAGE, "no command given");
        return emit_error(&out, &err);
    }
    NfError env_err;
    if (nf_cpu_check_env(&env_err) != 0) return emit_error(&out, &env_err);
    if (dist_check_build(&env_err) != 0) return emit_error(&out, &env_err);
    /* N copies of generate or serve would each do the whole job: only train shares one among ranks */
    int world = dist_launched_size();
    if (world > 1 && strcmp(argv[1], "train") != 0) {
        NfError err;
        nf_fail(&err, NF_ERR_USAGE, "only train runs under mpirun with several processes (here: %s, -np %d)", argv[1],
                world);
        return emit_error(&out, &err);
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(argv[1], COMMANDS[i].name) != 0) continue;
        /* before the command's work (MPI_Init included): the re-exec keeps the process id, argv and environment */
        if (COMMANDS[i].parallel) wait_policy_apply(argv);
        return COMMANDS[i].run(argc - 2, argv + 2, &out);
    }
    NfError err;
    nf_fail(&err, NF_ERR_USAGE, "unknown command '%s'", argv[1]);
    print_usage();
    return emit_error(&out, &err);
}

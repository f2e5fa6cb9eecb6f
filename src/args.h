/* args.h — table-driven command-line flags, shared by every command.
 *
 * A command declares its flags as an array of ArgSpec, each pointing at the
 * variable it fills. args_parse accepts `--name value` and `--name=value`,
 * rejects unknown flags, missing values, malformed numbers and values outside
 * [min, max], always naming the flag. Defaults are whatever the variables
 * held before parsing. */
#ifndef NF_ARGS_H
#define NF_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

typedef enum {
    ARG_STRING, /* const char **dest */
    ARG_INT,    /* int64_t *dest, checked against [min, max] */
    ARG_FLOAT,  /* double *dest, finite, checked against [min, max] */
    ARG_FLAG,   /* bool *dest, takes no value */
    ARG_CHOICE, /* const char **dest, one of the '|'-separated words in choices */
    ARG_LIST,   /* StringList *dest: the flag may repeat; every value is kept */
} ArgType;

#define ARG_LIST_MAX 64

typedef struct {
    const char *items[ARG_LIST_MAX];
    int n;
} StringList;

typedef struct {
    const char *name; /* without the leading "--" */
    ArgType type;
    void *dest;
    double min, max;     /* ARG_INT / ARG_FLOAT */
    const char *choices; /* ARG_CHOICE: "eot|blank|none" */
    const char *help;    /* one line for --help */
    bool seen;           /* set by args_parse */
} ArgSpec;

/* Parses argv[0..argc) (the words after the command name). Returns 0, or -1
 * with err set. Sets *help_requested when --help or -h is present. */
int args_parse(ArgSpec *specs, int n_specs, int argc, char **argv, bool *help_requested, NfError *err);

/* A command's flags: args_parse, and on --help the command's usage printed
 * to stderr. Returns ARGS_OK, ARGS_HELP (the command should exit 0) or
 * ARGS_ERROR (err set). */
/* The number of flags in a command's ArgSpec array. */
#define ARGS_COUNT(specs) ((int)(sizeof(specs) / sizeof((specs)[0])))
enum { ARGS_OK = 0, ARGS_HELP = 1, ARGS_ERROR = -1 };
int args_parse_command(const char *command, const char *summary, ArgSpec *specs, int n_specs, int argc, char **argv,
                       NfError *err);

/* Sets s's variable from the text value as the parser would (checked against the range or choices),
 * without counting the flag as given: how a command sets defaults kept as text (train_options.c). */
int args_set_value(ArgSpec *s, const char *value, NfError *err);

/* Whether the flag `name` was given (on the command line or by --config). */
bool args_seen(const ArgSpec *specs, int n_specs, const char *name);

/* Applies a --config JSON object: each key is a flag name; flags already
 * given on the command line win. Unknown keys and bad values are errors
 * naming the key. The strings of json stay referenced: keep it alive. */
struct JsonValue;
int args_apply_json(ArgSpec *specs, int n_specs, const struct JsonValue *json, NfError *err);

/* Writes every flag's current value as the object `key`, in table order. */
struct JsonBuf;
void args_to_json(const ArgSpec *specs, int n_specs, struct JsonBuf *json, const char *key);

/* Prints "usage: neuralforge <command> ..." and every flag with its help to stderr. */
void args_print_help(const char *command, const char *summary, const ArgSpec *specs, int n_specs);

#endif

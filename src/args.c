/* args.c — parsing and range-checking command-line flags. */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ArgSpec *find_spec(ArgSpec *specs, int n, const char *name, size_t name_len) {
    for (int i = 0; i < n; i++)
        if (strlen(specs[i].name) == name_len && strncmp(specs[i].name, name, name_len) == 0)
            return &specs[i];
    return NULL;
}

static bool choice_allowed(const char *choices, const char *value) {
    size_t vlen = strlen(value);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, value, len) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

static int set_value(ArgSpec *s, const char *value, NfError *err) {
    switch (s->type) {
    case ARG_STRING:
        *(const char **)s->dest = value;
        return 0;
    case ARG_CHOICE:
        if (!choice_allowed(s->choices, value))
            return nf_fail(err, NF_ERR_USAGE, "--%s must be one of %s, got '%s'", s->name, s->choices, value);
        *(const char **)s->dest = value;
        return 0;
    case ARG_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0')
            return nf_fail(err, NF_ERR_USAGE, "--%s expects an integer, got '%s'", s->name, value);
        if ((double)v < s->min || (double)v > s->max)
            return nf_fail(err, NF_ERR_USAGE, "--%s must be between %.0f and %.0f, got %lld",
                           s->name, s->min, s->max, v);
        *(int64_t *)s->dest = v;
        return 0;
    }
    case ARG_FLOAT: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !isfinite(v))
            return nf_fail(err, NF_ERR_USAGE, "--%s expects a number, got '%s'", s->name, value);
        if (v < s->min || v > s->max)
            return nf_fail(err, NF_ERR_USAGE, "--%s must be between %g and %g, got %g", s->name, s->min, s->max, v);
        *(double *)s->dest = v;
        return 0;
    }
    case ARG_FLAG:
        *(bool *)s->dest = true;
        return 0;
    }
    return nf_fail(err, NF_ERR_USAGE, "--%s: unsupported flag type", s->name);
}

int args_parse(ArgSpec *specs, int n_specs, int argc, char **argv, bool *help_requested, NfError *err) {
    *help_requested = false;
    for (int i = 0; i < argc; i++) {
        const char *word = argv[i];
        if (strcmp(word, "--help") == 0 || strcmp(word, "-h") == 0) {
            *help_requested = true;
            continue;
        }
        if (strncmp(word, "--", 2) != 0 || word[2] == '\0')
            return nf_fail(err, NF_ERR_USAGE, "unexpected argument '%s' (flags start with --)", word);
        const char *name = word + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        ArgSpec *s = find_spec(specs, n_specs, name, name_len);
        if (!s) return nf_fail(err, NF_ERR_USAGE, "unknown flag --%.*s", (int)name_len, name);
        if (s->seen) return nf_fail(err, NF_ERR_USAGE, "--%s given more than once", s->name);
        s->seen = true;
        const char *value;
        if (s->type == ARG_FLAG) {
            if (eq) return nf_fail(err, NF_ERR_USAGE, "--%s takes no value", s->name);
            value = "";
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return nf_fail(err, NF_ERR_USAGE, "--%s needs a value", s->name);
            value = argv[++i];
        }
        if (set_value(s, value, err) != 0) return -1;
    }
    return 0;
}

void args_print_help(const char *command, const char *summary, const ArgSpec *specs, int n_specs) {
    fprintf(stderr, "usage: neuralforge %s [flags]\n%s\n\nflags:\n", command, summary);
    for (int i = 0; i < n_specs; i++) {
        const ArgSpec *s = &specs[i];
        const char *arg = s->type == ARG_FLAG ? "" : s->type == ARG_CHOICE ? s->choices
                        : s->type == ARG_STRING ? "VALUE" : "N";
        fprintf(stderr, "  --%-16s %-14s %s\n", s->name, arg, s->help ? s->help : "");
    }
}

/* args.c — parsing and range-checking command-line flags. */
#include "args.h"

#include "json.h"
#include "json_parse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ArgSpec *find_spec(ArgSpec *specs, int n, const char *name, size_t name_len) {
    for (int i = 0; i < n; i++)
        if (strlen(specs[i].name) == name_len && strncmp(specs[i].name, name, name_len) == 0) return &specs[i];
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

int args_set_value(ArgSpec *s, const char *value, NfError *err) {
    switch (s->type) {
    case ARG_STRING: *(const char **)s->dest = value; return 0;
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
            return nf_fail(err, NF_ERR_USAGE, "--%s must be between %.0f and %.0f, got %lld", s->name, s->min, s->max,
                           v);
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
    case ARG_FLAG: *(bool *)s->dest = true; return 0;
    case ARG_LIST: {
        StringList *list = s->dest;
        if (list->n == ARG_LIST_MAX)
            return nf_fail(err, NF_ERR_USAGE, "--%s given more than %d times", s->name, ARG_LIST_MAX);
        list->items[list->n++] = value;
        return 0;
    }
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
        if (s->seen && s->type != ARG_LIST) return nf_fail(err, NF_ERR_USAGE, "--%s given more than once", s->name);
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
        if (args_set_value(s, value, err) != 0) return -1;
    }
    return 0;
}

void args_print_help(const char *command, const char *summary, const ArgSpec *specs, int n_specs) {
    fprintf(stderr, "usage: neuralforge %s [flags]\n%s\n\nflags:\n", command, summary);
    for (int i = 0; i < n_specs; i++) {
        const ArgSpec *s = &specs[i];
        const char *arg = s->type == ARG_FLAG                            ? ""
                          : s->type == ARG_CHOICE                        ? s->choices
                          : s->type == ARG_STRING || s->type == ARG_LIST ? "VALUE"
                                                                         : "N";
        fprintf(stderr, "  --%-16s %-14s %s\n", s->name, arg, s->help ? s->help : "");
    }
}

int args_parse_command(const char *command, const char *summary, ArgSpec *specs, int n_specs, int argc, char **argv,
                       NfError *err) {
    bool help;
    if (args_parse(specs, n_specs, argc, argv, &help, err) != 0) return ARGS_ERROR;
    if (!help) return ARGS_OK;
    args_print_help(command, summary, specs, n_specs);
    return ARGS_HELP;
}

bool args_seen(const ArgSpec *specs, int n_specs, const char *name) {
    for (int i = 0; i < n_specs; i++)
        if (strcmp(specs[i].name, name) == 0) return specs[i].seen;
    return false;
}

int args_apply_json(ArgSpec *specs, int n_specs, const JsonValue *json, NfError *err) {
    if (json->type != JV_OBJECT) return nf_fail(err, NF_ERR_USAGE, "the config file must hold a JSON object");
    for (int i = 0; i < json->n; i++) {
        const char *key = json->keys[i];
        const JsonValue *v = &json->items[i]; /* no key twice: json_parse refuses duplicates */
        ArgSpec *s = find_spec(specs, n_specs, key, strlen(key));
        if (!s || strcmp(key, "config") == 0)
            return nf_fail(err, NF_ERR_USAGE, "unknown key \"%s\" in the config file", key);
        if (s->seen) continue; /* the command line wins */
        s->seen = true;
        if (s->type == ARG_FLAG) {
            if (v->type != JV_BOOL) return nf_fail(err, NF_ERR_USAGE, "config key \"%s\" must be true or false", key);
            *(bool *)s->dest = v->boolean;
            continue;
        }
        if (s->type == ARG_LIST && v->type == JV_ARRAY) {
            for (int k = 0; k < v->n; k++) {
                if (v->items[k].type != JV_STRING)
                    return nf_fail(err, NF_ERR_USAGE, "config key \"%s\" must hold strings", key);
                if (args_set_value(s, v->items[k].text, err) != 0) return -1;
            }
            continue;
        }
        if (v->type != JV_STRING && v->type != JV_NUMBER)
            return nf_fail(err, NF_ERR_USAGE, "config key \"%s\" has a value of the wrong type", key);
        if ((s->type == ARG_INT || s->type == ARG_FLOAT) != (v->type == JV_NUMBER))
            return nf_fail(err, NF_ERR_USAGE, "config key \"%s\" must be a %s", key,
                           v->type == JV_NUMBER ? "string" : "number");
        if (args_set_value(s, v->text, err) != 0) return -1;
    }
    return 0;
}

void args_to_json(const ArgSpec *specs, int n_specs, JsonBuf *j, const char *key) {
    json_object_begin(j, key);
    for (int i = 0; i < n_specs; i++) {
        const ArgSpec *s = &specs[i];
        switch (s->type) {
        case ARG_STRING:
        case ARG_CHOICE: json_str(j, s->name, *(const char **)s->dest); break;
        case ARG_INT: json_int(j, s->name, *(int64_t *)s->dest); break;
        case ARG_FLOAT: json_number(j, s->name, *(double *)s->dest); break;
        case ARG_FLAG: json_bool(j, s->name, *(bool *)s->dest); break;
        case ARG_LIST: {
            const StringList *list = s->dest;
            json_array_begin(j, s->name);
            for (int k = 0; k < list->n; k++) json_str(j, NULL, list->items[k]);
            json_array_end(j);
            break;
        }
        }
    }
    json_object_end(j);
}

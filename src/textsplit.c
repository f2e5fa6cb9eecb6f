/* textsplit.c — documents of a text corpus: separator lines and stripping. */
#include "textsplit.h"

#include <stdbool.h>
#include <string.h>

int text_split_parse(const char *name, TextSplit *split) {
    if (strcmp(name, "eot") == 0)
        *split = TEXT_SPLIT_EOT;
    else if (strcmp(name, "blank") == 0)
        *split = TEXT_SPLIT_BLANK;
    else if (strcmp(name, "none") == 0)
        *split = TEXT_SPLIT_NONE;
    else
        return -1;
    return 0;
}

const char *text_split_name(TextSplit split) {
    return split == TEXT_SPLIT_EOT ? "eot" : split == TEXT_SPLIT_BLANK ? "blank" : "none";
}

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void text_strip(const char *text, size_t *b, size_t *e) {
    while (*b < *e && is_space((unsigned char)text[*b])) (*b)++;
    while (*e > *b && is_space((unsigned char)text[*e - 1])) (*e)--;
}

/* Is line [b, e) a document separator in this split mode? */
static bool is_separator(const char *text, size_t b, size_t e, TextSplit split) {
    text_strip(text, &b, &e);
    if (split == TEXT_SPLIT_EOT)
        return e - b == strlen(TEXT_EOT_MARKER) && memcmp(text + b, TEXT_EOT_MARKER, e - b) == 0;
    if (split == TEXT_SPLIT_BLANK) return b == e;
    return false;
}

/* Hands [b, e) to fn once stripped, unless it is empty. first_line is the line at b. */
static int emit(const char *text, size_t b, size_t e, size_t first_line, TextDocumentFn fn, void *ctx, NfError *err) {
    size_t sb = b, se = e;
    text_strip(text, &sb, &se);
    if (sb == se) return 0;
    for (size_t i = b; i < sb; i++) first_line += text[i] == '\n';
    return fn(ctx, text + sb, se - sb, first_line, err);
}

int text_split(const char *text, size_t size, TextSplit split, TextDocumentFn fn, void *ctx, NfError *err) {
    size_t doc_start = 0, doc_line = 1, line = 0, line_no = 1;
    while (line < size) {
        const char *nl = split == TEXT_SPLIT_NONE ? NULL : memchr(text + line, '\n', size - line);
        size_t line_end = nl ? (size_t)(nl - text) : size;
        if (split != TEXT_SPLIT_NONE && is_separator(text, line, line_end, split)) {
            if (emit(text, doc_start, line, doc_line, fn, ctx, err) != 0) return -1;
            doc_start = line_end; /* the separator's '\n' is stripped with the next document */
            doc_line = line_no;
        }
        line = nl ? line_end + 1 : size;
        line_no++;
    }
    return emit(text, doc_start, size, doc_line, fn, ctx, err);
}

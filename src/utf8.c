/* utf8.c — UTF-8 validation and the split-character stream. */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

size_t utf8_lead_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

size_t utf8_valid_len(const unsigned char *s, size_t n) {
    size_t len = utf8_lead_len(s[0]);
    if (len <= 1 || len > n) return len == 1 ? 1 : 0;
    uint32_t cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* overlong forms, surrogates and code points past U+10FFFF are invalid */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

size_t utf8_stream_push(Utf8Stream *s, const char *bytes, size_t n, char *out) {
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        s->pending[s->n_pending++] = (unsigned char)bytes[i];
        /* drain: emit complete characters, replace what can never become one */
        while (s->n_pending > 0) {
            size_t want = utf8_lead_len(s->pending[0]);
            if (want == 0) {
                memcpy(out + written, REPLACEMENT, 3);
                written += 3;
                memmove(s->pending, s->pending + 1, (size_t)--s->n_pending);
                continue;
            }
            /* a continuation byte missing before the character is complete */
            int broken = 0;
            for (int k = 1; k < s->n_pending && broken == 0; k++)
                if ((s->pending[k] & 0xC0) != 0x80) broken = k;
            if (broken == 0 && (size_t)s->n_pending < want) break; /* wait for more */
            size_t len = broken ? 0 : utf8_valid_len(s->pending, (size_t)s->n_pending);
            if (len == 0) {
                memcpy(out + written, REPLACEMENT, 3);
                written += 3;
                size_t drop = broken ? (size_t)broken : want;
                memmove(s->pending, s->pending + drop, (size_t)s->n_pending - drop);
                s->n_pending -= (int)drop;
            } else {
                memcpy(out + written, s->pending, len);
                written += len;
                memmove(s->pending, s->pending + len, (size_t)s->n_pending - len);
                s->n_pending -= (int)len;
            }
        }
    }
    return written;
}

size_t utf8_stream_finish(Utf8Stream *s, char *out) {
    if (s->n_pending == 0) return 0;
    s->n_pending = 0;
    memcpy(out, REPLACEMENT, 3);
    return 3;
}

/* utf8.h — UTF-8 validation, and reassembling characters that arrive split
 * across tokens (byte-fallback pieces carry one byte each). */
#ifndef NF_UTF8_H
#define NF_UTF8_H

#include <stddef.h>

/* Length (1-4) of the valid UTF-8 character at s (n bytes available), or 0 if
 * the bytes there are not a valid, complete, shortest-form character. */
size_t utf8_valid_len(const unsigned char *s, size_t n);

/* Expected length of a character from its lead byte, 0 for a non-lead byte. */
size_t utf8_lead_len(unsigned char c);

typedef struct {
    unsigned char pending[4]; /* bytes of a character not yet complete */
    int n_pending;
} Utf8Stream;

/* Appends the bytes to the stream and writes out every character they
 * complete; invalid bytes come out as U+FFFD. out needs 3 * (n + 4) bytes.
 * Returns the number of bytes written. */
size_t utf8_stream_push(Utf8Stream *s, const char *bytes, size_t n, char *out);
/* Writes U+FFFD for an unfinished character (out needs 3 bytes); returns bytes written. */
size_t utf8_stream_finish(Utf8Stream *s, char *out);

#endif

/* heap.h — a binary heap of one item type: the merge queues of both BPE
 * encoders (tokenizer.c's, by SentencePiece score; bpe.c's, by merge rank).
 *
 * NF_HEAP_TYPE(Name, Item) declares `Name` {Item *items; size_t len, cap;};
 * NF_HEAP_FUNCS(prefix, Name, Item, before) defines prefix_push (false when
 * memory runs out) and prefix_pop (len > 0), where before(a, b) is true when
 * a leaves the heap first. Macros rather than void pointers and a comparison
 * callback, so each queue keeps its type and its comparison inlines: they
 * run for every merge of every word. */
#ifndef NF_HEAP_H
#define NF_HEAP_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define NF_HEAP_TYPE(Name, Item) \
    typedef struct {             \
        Item *items;             \
        size_t len, cap;         \
    } Name

#define NF_HEAP_FUNCS(prefix, Name, Item, before)                                                  \
    static inline bool prefix##_push(Name *h, Item item) {                                         \
        if (!nf_grow((void **)&h->items, &h->cap, h->len + 1, sizeof *h->items, 64)) return false; \
        size_t i = h->len++;                                                                       \
        while (i > 0 && before(&item, &h->items[(i - 1) / 2])) {                                   \
            h->items[i] = h->items[(i - 1) / 2];                                                   \
            i = (i - 1) / 2;                                                                       \
        }                                                                                          \
        h->items[i] = item;                                                                        \
        return true;                                                                               \
    }                                                                                              \
    static inline Item prefix##_pop(Name *h) {                                                     \
        Item top = h->items[0], last = h->items[--h->len];                                         \
        size_t i = 0;                                                                              \
        for (;;) {                                                                                 \
            size_t child = 2 * i + 1;                                                              \
            if (child >= h->len) break;                                                            \
            if (child + 1 < h->len && before(&h->items[child + 1], &h->items[child])) child++;     \
            if (!before(&h->items[child], &last)) break;                                           \
            h->items[i] = h->items[child];                                                         \
            i = child;                                                                             \
        }                                                                                          \
        if (h->len > 0) h->items[i] = last;                                                        \
        return top;                                                                                \
    }

#endif

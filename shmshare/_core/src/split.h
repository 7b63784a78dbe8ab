/* The layout of a value stored split (dict_split.c, which explains it):
 *
 *     PROTO 5 | BININT <off> | POP | ... | BYTEARRAY8 <n> | n bytes at off | ...
 *
 * Header-only: the readers in _lib (dict_split.c, queue.c) and in _hotpath
 * (ext/hotqueue.c) use the same two functions. */
#ifndef SHMS_SPLIT_H
#define SHMS_SPLIT_H

#include <stdint.h>
#include <string.h>

#define SHMS_SPLIT_PREFIX 8     /* PROTO 5, BININT <off>, POP */
#define SHMS_SPLIT_OP 9         /* BYTEARRAY8 <n>: where the rest has NEXT_BUFFER (1 byte) */

/* 1 if the vlen bytes at v are a split value: its data's offset and length in
 * *off and *n; else 0. */
static inline int shms_split_at(const char *val, uint64_t vlen, uint64_t *off, uint64_t *n)
{
    const unsigned char *v = (const unsigned char *)val;
    int32_t o;
    uint64_t len;
    if (vlen < SHMS_SPLIT_PREFIX + SHMS_SPLIT_OP || v[0] != 0x80 || v[1] != 5 ||
        v[2] != 'J' || v[7] != '0')
        return 0;
    memcpy(&o, v + 3, sizeof o);
    if (o < SHMS_SPLIT_PREFIX + SHMS_SPLIT_OP || (uint64_t)o > vlen ||
        v[o - SHMS_SPLIT_OP] != 0x96)                   /* BYTEARRAY8 */
        return 0;
    memcpy(&len, v + o - 8, sizeof len);
    if (!len || len > vlen - (uint64_t)o)
        return 0;
    *off = (uint64_t)o;
    *n = len;
    return 1;
}

/* The length of the rest of a split value (all but its data, NEXT_BUFFER for
 * BYTEARRAY8 <n>). */
static inline uint64_t shms_split_rest_len(uint64_t vlen, uint64_t n)
{
    return vlen - n - (SHMS_SPLIT_OP - 1);
}

/* Write the rest of the split value val (data at off, n bytes) into out. */
static inline void shms_split_rest(char *out, const char *val, uint64_t vlen, uint64_t off,
                                   uint64_t n)
{
    memcpy(out, val, off - SHMS_SPLIT_OP);
    out[off - SHMS_SPLIT_OP] = (char)0x97;              /* NEXT_BUFFER */
    memcpy(out + off - SHMS_SPLIT_OP + 1, val + off + n, vlen - off - n);
}

#endif

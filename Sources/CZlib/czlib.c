#include "czlib.h"
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

long czlib_inflate_raw(const uint8_t *input, size_t length, uint8_t *out, size_t capacity) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return -1;
    s.next_in = (Bytef *)input;
    s.avail_in = (uInt)length;
    s.next_out = out;
    s.avail_out = (uInt)capacity;
    int r = inflate(&s, Z_FINISH);
    long produced = (long)s.total_out;
    inflateEnd(&s);
    return r == Z_STREAM_END ? produced : -1;
}

long czlib_deflate_raw(const uint8_t *input, size_t length, uint8_t *out, size_t capacity, int level) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    s.next_in = (Bytef *)input;
    s.avail_in = (uInt)length;
    s.next_out = out;
    s.avail_out = (uInt)capacity;
    int r = deflate(&s, Z_FINISH);
    long produced = (long)s.total_out;
    deflateEnd(&s);
    return r == Z_STREAM_END ? produced : -1;
}

size_t czlib_deflate_bound(size_t length) {
    return (size_t)compressBound((uLong)length) + 64;
}

/* A streaming gzip decoder: feed it the body as it arrives. */
struct czlib_gunzip { z_stream s; int ended; };

struct czlib_gunzip *czlib_gunzip_new(void) {
    struct czlib_gunzip *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    if (inflateInit2(&g->s, 16 + 15) != Z_OK) { free(g); return NULL; }
    return g;
}

long czlib_gunzip_update(struct czlib_gunzip *g, const uint8_t *input, size_t length, size_t *consumed,
                         uint8_t *out, size_t capacity) {
    if (g->ended) { *consumed = 0; return length == 0 ? 0 : -1; }
    g->s.next_in = (Bytef *)input;
    g->s.avail_in = (uInt)length;
    g->s.next_out = out;
    g->s.avail_out = (uInt)capacity;
    int r = inflate(&g->s, Z_NO_FLUSH);
    *consumed = length - g->s.avail_in;
    if (r == Z_STREAM_END) g->ended = 1;
    else if (r != Z_OK && r != Z_BUF_ERROR) return -1;
    return (long)(capacity - g->s.avail_out);
}

int czlib_gunzip_ended(const struct czlib_gunzip *g) { return g->ended; }

void czlib_gunzip_free(struct czlib_gunzip *g) {
    if (!g) return;
    inflateEnd(&g->s);
    free(g);
}

struct czlib_gzip { z_stream s; };

struct czlib_gzip *czlib_gzip_new(int level) {
    struct czlib_gzip *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    if (deflateInit2(&g->s, level, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) { free(g); return NULL; }
    return g;
}

long czlib_gzip_update(struct czlib_gzip *g, const uint8_t *input, size_t length, int finish, size_t *consumed,
                       uint8_t *out, size_t capacity) {
    g->s.next_in = (Bytef *)input;
    g->s.avail_in = (uInt)length;
    g->s.next_out = out;
    g->s.avail_out = (uInt)capacity;
    int r = deflate(&g->s, finish ? Z_FINISH : Z_NO_FLUSH);
    *consumed = length - g->s.avail_in;
    if (r == Z_STREAM_ERROR) return -1;
    return (long)(capacity - g->s.avail_out);
}

void czlib_gzip_free(struct czlib_gzip *g) {
    if (!g) return;
    deflateEnd(&g->s);
    free(g);
}

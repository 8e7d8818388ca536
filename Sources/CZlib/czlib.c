#include "czlib.h"
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

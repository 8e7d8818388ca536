#ifndef CZLIB_H
#define CZLIB_H
#include <stddef.h>
#include <stdint.h>

/// Inflates one raw deflate stream (no zlib header) into `out`; returns the
/// bytes produced, or -1 if the input is not one complete stream or does not
/// fit in `capacity`.
long czlib_inflate_raw(const uint8_t *input, size_t length, uint8_t *out, size_t capacity);

/// Deflates `input` into one complete raw deflate stream at `level` (0-9);
/// returns the bytes produced, or -1. `out` needs czlib_deflate_bound(length).
long czlib_deflate_raw(const uint8_t *input, size_t length, uint8_t *out, size_t capacity, int level);
size_t czlib_deflate_bound(size_t length);

#endif

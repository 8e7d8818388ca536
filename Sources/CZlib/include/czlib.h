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

/// A streaming gzip (RFC 1952) decoder.
struct czlib_gunzip;
struct czlib_gunzip *czlib_gunzip_new(void);
/// Decodes from `input` into `out`; sets `consumed`; returns the bytes
/// produced, or -1 for input that is not gzip (or data after its end).
long czlib_gunzip_update(struct czlib_gunzip *g, const uint8_t *input, size_t length, size_t *consumed,
                         uint8_t *out, size_t capacity);
/// Whether the gzip stream has ended.
int czlib_gunzip_ended(const struct czlib_gunzip *g);
void czlib_gunzip_free(struct czlib_gunzip *g);

/// A streaming gzip encoder.
struct czlib_gzip;
struct czlib_gzip *czlib_gzip_new(int level);
/// Encodes from `input` into `out` (with `finish`, ends the stream: call until
/// it produces less than `capacity`); sets `consumed`; returns the bytes produced or -1.
long czlib_gzip_update(struct czlib_gzip *g, const uint8_t *input, size_t length, int finish, size_t *consumed,
                       uint8_t *out, size_t capacity);
void czlib_gzip_free(struct czlib_gzip *g);

#endif

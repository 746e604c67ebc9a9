/* fuzz_codec - ds_codec_decode on arbitrary bytes.
 *
 * Input: byte 0 = flags (bits 0-1 mod 3: cache 0 none, 1 f32, 2 u8; bit 2: pass the
 * cache's shape as expected), bytes 1-4 = the small NCHW shape of the cache
 * (each (b % 6) + 1), the rest = the payload.  Checks: no crash or OOB (ASan),
 * a rejected payload leaves the cache bit-identical, an accepted one yields a
 * tensor that re-encodes and decodes to itself.
 *
 * DS_FUZZ_WRITE_CORPUS=<dir> ./fuzz_codec   writes the seed corpus and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

static ds_codec_scratch g_dec, g_enc;
static ds_buf g_out;

static void fill(ds_tensor *t, unsigned seed)
{
    size_t n = (size_t)ds_shape_numel(&t->shape);
    for (size_t i = 0; i < n; i++) {
        unsigned v = (unsigned)(i * 2654435761u + seed) >> 7;
        if (t->dtype == DS_U8) /* smooth, so that lz4/zstd find something */
            ds_tensor_u8(t)[i] = (uint8_t)(i / 5 % 16 + seed);
        else
            ds_tensor_f32(t)[i] = (v % 3) ? 0.0f : (float)(v % 1000) / 7.0f;
    }
}

static void write_seeds(const char *dir)
{
    static const struct {
        ds_dtype t;
        ds_compress c;
        int update, with_ref;
    } kinds[] = {
        {DS_F32, DS_COMPRESS_NONE, 0, 1}, {DS_F32, DS_COMPRESS_NONE, 1, 1},
        {DS_F32, DS_COMPRESS_LZ4, 1, 1},  {DS_F32, DS_COMPRESS_ZSTD, 1, 0},
        {DS_U8, DS_COMPRESS_NONE, 1, 1},  {DS_U8, DS_COMPRESS_LZ4, 0, 0},
        {DS_U8, DS_COMPRESS_ZSTD, 0, 0},  {DS_F32, DS_COMPRESS_LZ4, 1, 1}, /* 6x6x6: shuffled */
        {DS_F32, DS_COMPRESS_NONE, DS_CODEC_EXACT_DELTA, 1},
        {DS_U8, DS_COMPRESS_NONE, DS_CODEC_EXACT_DELTA, 1},
    };
    ds_error err;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int big = k == 7;
        ds_shape s = big ? ds_shape_nchw(1, 6, 6, 6) : ds_shape_nchw(1, 3, 5, 6);
        ds_tensor ref = {0}, cur = {0};
        if (ds_tensor_reserve(&ref, &s, kinds[k].t, &err) ||
            ds_tensor_reserve(&cur, &s, kinds[k].t, &err))
            exit(1);
        fill(&ref, 1);
        fill(&cur, 1);
        for (size_t i = 0; big && i < 216; i++) /* smooth new values: shuffling helps */
            if (i % 3)
                ds_tensor_f32(&cur)[i] = 1.0f + (float)i / 512.0f;
        /* a changed block in every channel (PIXEL for u8) or in one (ELEM) */
        size_t es = ds_dtype_size(kinds[k].t);
        for (int ch = 0; ch < 3; ch++)
            for (int i = 1; i < 3; i++)
                for (int j = 2; j < 5; j++) {
                    if (kinds[k].t == DS_F32 && ch != 1)
                        continue;
                    uint8_t *p = (uint8_t *)cur.data + ((size_t)(ch * 5 + i) * 6 + j) * es;
                    p[0] ^= 0x5a;
                }
        ds_codec_opts o = {kinds[k].c, 1, kinds[k].update};
        g_out.len = 0;
        uint8_t prefix[5] = {(uint8_t)((kinds[k].t == DS_F32 ? 1 : 2) | 4), 0, 2, 4, 5};
        if (big)
            prefix[2] = prefix[3] = prefix[4] = 5;
        if (ds_buf_append(&g_out, prefix, 5, &err) ||
            ds_codec_encode((int)k, &cur, kinds[k].with_ref ? &ref : NULL, &o, &g_enc, &g_out,
                            &err)) {
            fprintf(stderr, "%s\n", err.msg);
            exit(1);
        }
        ds_codec_header h;
        if (ds_codec_peek(g_out.data + 5, g_out.len - 5, &h, &err))
            exit(1);
        char path[4096];
        snprintf(path, sizeof path, "%s/seed_%zu_%s_%s_%s%s", dir, k,
                 kinds[k].t == DS_F32 ? "f32" : "u8",
                 h.exact_delta ? "delta" : kinds[k].update ? "upd" : "dense",
                 ds_compress_name(h.compress), h.shuffled ? "_shuffled" : "");
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(g_out.data, 1, g_out.len, f) != g_out.len || fclose(f)) {
            perror(path);
            exit(1);
        }
        ds_tensor_free(&ref);
        ds_tensor_free(&cur);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("DS_FUZZ_WRITE_CORPUS");
    if (dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    int kind = (data[0] & 3) % 3, use_expected = (data[0] >> 2) & 1;
    ds_shape s = ds_shape_nchw(data[1] % 6 + 1, data[2] % 6 + 1, data[3] % 6 + 1, data[4] % 6 + 1);
    const uint8_t *p = data + 5;
    size_t n = size - 5;
    ds_error err;
    ds_tensor cache = {0}, before = {0};
    if (kind == 1 || kind == 2) {
        if (ds_tensor_reserve(&cache, &s, kind == 1 ? DS_F32 : DS_U8, &err))
            abort();
        fill(&cache, data[1]);
        if (ds_tensor_copy(&before, &cache, &err))
            abort();
    }
    if (!use_expected) {
        /* Without an expected shape the header's shape is accepted; keep the
         * fuzzer away from legitimately huge (sparse) allocations. */
        ds_codec_header h;
        if (ds_codec_peek(p, n, &h, &err) == 0 && ds_shape_numel(&h.shape) > (1 << 16))
            goto done;
    }
    if (ds_codec_decode(p, n, use_expected ? &s : NULL, &cache, &g_dec, &err)) {
        if (!err.msg[0])
            abort();
        if (kind && (!ds_shape_equal(&cache.shape, &before.shape) || cache.dtype != before.dtype ||
                     memcmp(cache.data, before.data, ds_tensor_bytes(&before))))
            abort(); /* a rejected payload must leave the cache alone */
        if (!kind && cache.data)
            abort();
        goto done;
    }
    /* Accepted: the result must survive a round trip of its own. */
    {
        ds_codec_opts o = {(ds_compress)(data[1] % 3), 1, data[2] % 2 ? DS_CODEC_EXACT_DELTA : 1};
        ds_tensor again = {0};
        g_out.len = 0;
        if (ds_codec_encode(1, &cache, kind ? &before : NULL, &o, &g_enc, &g_out, &err) &&
            ds_codec_encode(1, &cache, NULL, &o, &g_enc, &g_out, &err))
            abort();
        ds_codec_header h;
        if (ds_codec_peek(g_out.data, g_out.len, &h, &err))
            abort();
        if (h.encoding == DS_ENC_UPDATE && ds_tensor_copy(&again, &before, &err))
            abort();
        if (ds_codec_decode(g_out.data, g_out.len, &cache.shape, &again, &g_dec, &err) ||
            memcmp(again.data, cache.data, ds_tensor_bytes(&cache)))
            abort();
        ds_tensor_free(&again);
    }
done:
    ds_tensor_free(&cache);
    ds_tensor_free(&before);
    return 0;
}

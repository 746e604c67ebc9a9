/* fuzz_predictors - ds_predictors_decode on arbitrary bytes.
 *
 * The model is a small DAG with every predictor kind (pass, mean, linear with
 * one and two inputs, MLP, concat).  Input: byte 0 = flags (bit 0: replace
 * the last 4 bytes by the CRC of the rest, so that the fuzzer gets past the
 * checksum to the field checks), the rest = the blob.  Checks: no crash, leak
 * or OOB (ASan); an accepted blob re-encodes to the same bytes (after the
 * CRC fix) and evaluates to fractions in [0,1] for any input.
 *
 * DS_FUZZ_WRITE_CORPUS=<dir> ./fuzz_predictors   writes the seed corpus and
 * exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/predict.h"

static ds_model g_model;
static int g_ready;

static void add_layer(ds_model *m, int id, ds_op op, int n_in, const int *in, int64_t c, int64_t h,
                      int64_t w, int ndim)
{
    ds_layer *l = &m->layers[id];
    char name[32];
    snprintf(name, sizeof name, "l%d", id);
    l->id = id;
    l->op = op;
    l->name = strdup(name);
    l->n_inputs = n_in;
    l->inputs = n_in ? malloc((size_t)n_in * sizeof(int)) : NULL;
    for (int k = 0; k < n_in; k++)
        l->inputs[k] = in[k];
    l->axis = 1;
    l->out_shape = ndim == 4 ? ds_shape_nchw(1, c, h, w) : ds_shape_make(2, (int64_t[]){1, c});
}

/* 0 input 1x3x4x4, 1 conv{0} x4, 2 relu{1}, 3 maxpool{2} 4x2x2, 4 conv{3},
 * 5 add{3,4}, 6 concat{3,5} 8x2x2, 7 flatten{6} 1x32, 8 gemm{7} 1x10,
 * 9 softmax{8}. */
static void make_model(void)
{
    ds_model *m = &g_model;
    memset(m, 0, sizeof *m);
    m->name = strdup("fuzz-dag");
    snprintf(m->hash, sizeof m->hash, "0123456789abcdef");
    m->n_layers = 10;
    m->layers = calloc(10, sizeof *m->layers);
    add_layer(m, 0, DS_OP_INPUT, 0, NULL, 3, 4, 4, 4);
    add_layer(m, 1, DS_OP_CONV, 1, (int[]){0}, 4, 4, 4, 4);
    add_layer(m, 2, DS_OP_RELU, 1, (int[]){1}, 4, 4, 4, 4);
    add_layer(m, 3, DS_OP_MAXPOOL, 1, (int[]){2}, 4, 2, 2, 4);
    add_layer(m, 4, DS_OP_CONV, 1, (int[]){3}, 4, 2, 2, 4);
    add_layer(m, 5, DS_OP_ADD, 2, (int[]){3, 4}, 4, 2, 2, 4);
    add_layer(m, 6, DS_OP_CONCAT, 2, (int[]){3, 5}, 8, 2, 2, 4);
    add_layer(m, 7, DS_OP_FLATTEN, 1, (int[]){6}, 32, 0, 0, 2);
    add_layer(m, 8, DS_OP_GEMM, 1, (int[]){7}, 10, 0, 0, 2);
    add_layer(m, 9, DS_OP_SOFTMAX, 1, (int[]){8}, 10, 0, 0, 2);
}

static void write_seeds(const char *dir)
{
    ds_error err;
    for (int k = 0; k < 4; k++) {
        ds_predictors *p = ds_predictors_new(&g_model, &err);
        if (!p)
            exit(1);
        if (k == 2 && ds_predictors_set_kind(p, &g_model, 3, DS_PRED_MLP, &err))
            exit(1);
        if (k == 3 && ds_predictors_set_kind(p, &g_model, 6, DS_PRED_MLP, &err))
            exit(1);
        for (int i = 0; i < p->n_layers; i++) {
            ds_layer_pred *lp = &p->layers[i];
            for (int c = 0; c < lp->n_out; c++) {
                lp->nonzero[c] = (c + k) % 5 / 4.0;
                if (lp->b)
                    lp->b[c] = 0.1 * c - 0.2;
                if (lp->v)
                    lp->v[c] = 0.5 + 0.1 * k;
            }
            for (int j = 0; j < lp->n_feat; j++)
                lp->w[j] = j % 3 - 1.0;
            lp->r2 = k == 1 ? 0.5 : 0.9;
            lp->mae = 0.01 * k;
        }
        ds_buf b = {0};
        if (ds_predictors_encode(p, &b, &err))
            exit(1);
        char path[512];
        snprintf(path, sizeof path, "%s/seed_%d", dir, k);
        FILE *f = fopen(path, "wb");
        uint8_t flags = (uint8_t)(k & 1); /* both with and without the CRC fix */
        if (!f || fwrite(&flags, 1, 1, f) != 1 || fwrite(b.data, 1, b.len, f) != b.len ||
            fclose(f))
            exit(1);
        ds_buf_free(&b);
        ds_predictors_free(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) {
        make_model();
        g_ready = 1;
        const char *dir = getenv("DS_FUZZ_WRITE_CORPUS");
        if (dir) {
            write_seeds(dir);
            exit(0);
        }
    }
    if (size < 1)
        return 0;
    size_t n = size - 1;
    uint8_t *blob = malloc(n ? n : 1); /* exact size: ASan sees overreads */
    memcpy(blob, data + 1, n);
    if ((data[0] & 1) && n >= 4) {
        uint32_t crc = ds_crc32(0, blob, n - 4);
        for (int i = 0; i < 4; i++)
            blob[n - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    }
    ds_predictors *p = NULL;
    ds_error err;
    if (ds_predictors_decode(blob, n, &g_model, &p, &err) == 0) {
        ds_buf b = {0};
        if (ds_predictors_encode(p, &b, &err) || b.len != n || memcmp(b.data, blob, n) != 0)
            abort(); /* an accepted blob is canonical */
        ds_buf_free(&b);
        float buf[64], *lf[10];
        static const int ch[10] = {3, 4, 4, 4, 4, 4, 8, 1, 1, 1};
        int off = 0;
        for (int i = 0; i < 10; i++) {
            lf[i] = buf + off;
            off += ch[i];
        }
        float in[3] = {(float)(n % 7) / 6.0f, 1.0f, 0.0f};
        if (ds_predictors_eval(p, &g_model, in, lf, &err))
            abort();
        for (int i = 0; i < off; i++)
            if (!(buf[i] >= 0.0f && buf[i] <= 1.0f))
                abort();
        ds_predictors_free(p);
    }
    free(blob);
    return 0;
}

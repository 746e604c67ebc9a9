/* predict.c - predictor representation, evaluation and portable blob. */
#include "sched/predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 255 /* n_in is one byte in the blob */

static const char *const kind_names[DS_PRED_KIND_COUNT] = {"pass", "mean", "linear", "mlp",
                                                           "concat"};

const char *ds_pred_kind_name(ds_pred_kind k)
{
    return (unsigned)k < DS_PRED_KIND_COUNT ? kind_names[k] : "?";
}

int ds_predict_channels(const ds_shape *s)
{
    if (s->ndim < 1)
        return 0;
    int64_t n = ds_shape_numel(s);
    int64_t plane = s->dims[s->ndim - 1];
    if (s->ndim >= 3)
        plane *= s->dims[s->ndim - 2];
    if (plane <= 0 || n <= 0 || n / plane > INT32_MAX)
        return 0;
    return (int)(n / plane);
}

static int layer_channels(const ds_model *m, int id)
{
    return ds_predict_channels(&m->layers[id].out_shape);
}

/* Does kind fit layer id's op and shapes?  Fills *n_feat for MLP. */
static int kind_fits(const ds_model *m, int id, ds_pred_kind kind, int *n_feat, ds_error *err)
{
    const ds_layer *l = &m->layers[id];
    int out = layer_channels(m, id);
    *n_feat = 0;
    if (out <= 0)
        return ds_errorf(err, "layer %d (%s): no output shape (input size not set)", id, l->name);
    if (id == 0) {
        if (kind != DS_PRED_PASS)
            return ds_errorf(err, "layer 0 (input): predictor must be pass, not %s",
                             ds_pred_kind_name(kind));
        return 0;
    }
    if (l->n_inputs < 1 || l->n_inputs > MAX_INPUTS)
        return ds_errorf(err, "layer %d (%s): %d inputs, predictors handle 1..%d", id, l->name,
                         l->n_inputs, MAX_INPUTS);
    int64_t sum = 0;
    int all_same = 1;
    for (int k = 0; k < l->n_inputs; k++) {
        int c = layer_channels(m, l->inputs[k]);
        sum += c;
        all_same &= c == out;
    }
    int in0 = layer_channels(m, l->inputs[0]);
    int ok = 0;
    switch (kind) {
    case DS_PRED_PASS:
        ok = l->n_inputs == 1 && in0 == out;
        break;
    case DS_PRED_MEAN:
        ok = l->n_inputs == 1 && in0 % out == 0;
        break;
    case DS_PRED_LINEAR:
        ok = all_same;
        break;
    case DS_PRED_MLP:
        ok = sum >= 1 && sum <= INT32_MAX;
        *n_feat = (int)sum;
        break;
    case DS_PRED_CONCAT:
        ok = l->op == DS_OP_CONCAT && l->axis == 1 && sum == out;
        break;
    default:
        return ds_errorf(err, "layer %d (%s): unknown predictor kind %d", id, l->name, (int)kind);
    }
    if (!ok)
        return ds_errorf(err, "layer %d (%s, %s, %d channels): predictor %s does not fit its shapes",
                         id, l->name, ds_op_name(l->op), out, ds_pred_kind_name(kind));
    return 0;
}

ds_pred_kind ds_predictors_default_kind(const ds_model *m, int layer)
{
    if (layer == 0)
        return DS_PRED_PASS;
    int nf;
    ds_pred_kind want = ds_op_pred_kind(m->layers[layer].op);
    /* a MEAN over groups of one channel (plane count unchanged) is a PASS */
    if (want == DS_PRED_MEAN && !kind_fits(m, layer, DS_PRED_PASS, &nf, NULL))
        return DS_PRED_PASS;
    return kind_fits(m, layer, want, &nf, NULL) ? DS_PRED_MLP : want;
}

static void layer_free(ds_layer_pred *lp)
{
    free(lp->a);
    free(lp->b);
    free(lp->w);
    free(lp->v);
    free(lp->nonzero);
    free(lp->in_ch);
    memset(lp, 0, sizeof *lp);
}

/* Allocates the arrays of layer id for this kind (reset values). */
static int layer_alloc(ds_layer_pred *lp, const ds_model *m, int id, ds_pred_kind kind, int n_feat)
{
    layer_free(lp);
    const ds_layer *l = &m->layers[id];
    int n_in = id == 0 ? 0 : l->n_inputs;
    lp->kind = kind;
    lp->n_in = n_in;
    lp->n_out = layer_channels(m, id);
    lp->n_feat = kind == DS_PRED_MLP ? n_feat : 0;
    lp->r2 = lp->mae = NAN;
    size_t no = (size_t)lp->n_out;
    lp->nonzero = malloc(no * sizeof *lp->nonzero);
    lp->in_ch = malloc((size_t)(n_in > 0 ? n_in : 1) * sizeof *lp->in_ch);
    if (!lp->nonzero || !lp->in_ch)
        return -1;
    for (int k = 0; k < n_in; k++)
        lp->in_ch[k] = layer_channels(m, l->inputs[k]);
    for (size_t c = 0; c < no; c++)
        lp->nonzero[c] = 1.0;
    if (kind == DS_PRED_LINEAR) {
        lp->a = malloc(no * (size_t)n_in * sizeof *lp->a);
        lp->b = calloc(no, sizeof *lp->b);
        if (!lp->a || !lp->b)
            return -1;
        for (size_t i = 0; i < no * (size_t)n_in; i++)
            lp->a[i] = 1.0;
    } else if (kind == DS_PRED_MLP) {
        lp->w = calloc((size_t)n_feat, sizeof *lp->w);
        lp->v = calloc(no, sizeof *lp->v);
        lp->b = calloc(no, sizeof *lp->b);
        if (!lp->w || !lp->v || !lp->b)
            return -1;
    }
    return 0;
}

int ds_predictors_set_kind(ds_predictors *p, const ds_model *m, int layer, ds_pred_kind kind,
                           ds_error *err)
{
    if (layer < 0 || layer >= p->n_layers || layer >= m->n_layers)
        return ds_errorf(err, "predictors: layer %d out of range", layer);
    int nf;
    if (kind_fits(m, layer, kind, &nf, err))
        return -1;
    if (layer_alloc(&p->layers[layer], m, layer, kind, nf))
        return ds_errorf(err, "predictors: out of memory");
    return 0;
}

ds_predictors *ds_predictors_new(const ds_model *m, ds_error *err)
{
    if (m->n_layers < 1 || strlen(m->hash) != 16) {
        ds_errorf(err, "predictors: model %s has no layers or no hash", m->name);
        return NULL;
    }
    ds_predictors *p = calloc(1, sizeof *p);
    if (!p || !(p->layers = calloc((size_t)m->n_layers, sizeof *p->layers))) {
        free(p);
        ds_errorf(err, "predictors: out of memory");
        return NULL;
    }
    memcpy(p->model_hash, m->hash, sizeof p->model_hash);
    p->n_layers = m->n_layers;
    for (int i = 0; i < m->n_layers; i++) {
        if (ds_predictors_set_kind(p, m, i, ds_predictors_default_kind(m, i), err)) {
            ds_predictors_free(p);
            return NULL;
        }
    }
    return p;
}

void ds_predictors_free(ds_predictors *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_layers; i++)
        layer_free(&p->layers[i]);
    free(p->layers);
    free(p);
}

int ds_predictors_check(const ds_predictors *p, const ds_model *m, ds_error *err)
{
    if (strcmp(p->model_hash, m->hash) != 0)
        return ds_errorf(err, "predictors are for model %s, not %s (%s)", p->model_hash, m->hash,
                         m->name);
    if (p->n_layers != m->n_layers)
        return ds_errorf(err, "predictors have %d layers, model %s has %d", p->n_layers, m->name,
                         m->n_layers);
    for (int i = 0; i < p->n_layers; i++) {
        const ds_layer_pred *lp = &p->layers[i];
        int nf;
        if (kind_fits(m, i, lp->kind, &nf, err))
            return ds_error_prefix(err, "predictors");
        int n_in = i == 0 ? 0 : m->layers[i].n_inputs;
        int same = lp->n_out == layer_channels(m, i) && lp->n_in == n_in && lp->n_feat == nf;
        for (int k = 0; same && k < n_in; k++)
            same = lp->in_ch[k] == layer_channels(m, m->layers[i].inputs[k]);
        if (!same)
            return ds_errorf(err,
                             "predictors: layer %d has %d inputs, %d channels, %d features; "
                             "the model's has %d inputs, %d channels, %d features",
                             i, lp->n_in, lp->n_out, lp->n_feat, n_in, layer_channels(m, i), nf);
    }
    return 0;
}

static float clamp01(double x)
{
    /* NaN goes to 0: a broken input must not poison the scheduler. */
    return x > 1.0 ? 1.0f : x > 0.0 ? (float)x : 0.0f;
}

void ds_layer_pred_eval(const ds_layer_pred *lp, const float *const *in, float *out)
{
    int n = lp->n_out;
    switch (lp->kind) {
    case DS_PRED_PASS:
        for (int c = 0; c < n; c++)
            out[c] = clamp01(in[0][c]);
        break;
    case DS_PRED_MEAN: {
        int g = lp->in_ch[0] / n;
        for (int c = 0; c < n; c++) {
            const float *x = in[0] + (size_t)c * (size_t)g;
            double s = 0;
            for (int j = 0; j < g; j++)
                s += clamp01(x[j]);
            out[c] = clamp01(s / g);
        }
        break;
    }
    case DS_PRED_LINEAR:
        for (int c = 0; c < n; c++) {
            const double *a = lp->a + (size_t)c * (size_t)lp->n_in;
            double y = lp->b[c];
            for (int k = 0; k < lp->n_in; k++)
                y += a[k] * clamp01(in[k][c]);
            out[c] = clamp01(y);
        }
        break;
    case DS_PRED_MLP: {
        double z = lp->w0;
        const double *w = lp->w;
        for (int k = 0; k < lp->n_in; k++) {
            for (int j = 0; j < lp->in_ch[k]; j++)
                z += w[j] * clamp01(in[k][j]);
            w += lp->in_ch[k];
        }
        double h = 1.0 / (1.0 + exp(-z));
        for (int c = 0; c < n; c++)
            out[c] = clamp01(lp->v[c] * h + lp->b[c]);
        break;
    }
    case DS_PRED_CONCAT: {
        float *o = out;
        for (int k = 0; k < lp->n_in; k++) {
            for (int j = 0; j < lp->in_ch[k]; j++)
                o[j] = clamp01(in[k][j]);
            o += lp->in_ch[k];
        }
        break;
    }
    default:
        for (int c = 0; c < n; c++)
            out[c] = 1.0f; /* unreachable for checked predictors; be pessimistic */
        break;
    }
}

int ds_predictors_eval(const ds_predictors *p, const ds_model *m, const float *input_frac,
                       float *const *layer_frac, ds_error *err)
{
    if (ds_predictors_check(p, m, err))
        return -1;
    for (int c = 0; c < p->layers[0].n_out; c++)
        layer_frac[0][c] = clamp01(input_frac[c]);
    const float *in_small[8];
    const float **in = in_small;
    int max_in = 0;
    for (int i = 1; i < m->n_layers; i++)
        if (m->layers[i].n_inputs > max_in)
            max_in = m->layers[i].n_inputs;
    if (max_in > 8 && !(in = malloc((size_t)max_in * sizeof *in)))
        return ds_errorf(err, "predictors: out of memory");
    for (int i = 1; i < m->n_layers; i++) {
        const ds_layer *l = &m->layers[i];
        for (int k = 0; k < l->n_inputs; k++)
            in[k] = layer_frac[l->inputs[k]];
        ds_layer_pred_eval(&p->layers[i], in, layer_frac[i]);
    }
    if (in != in_small)
        free(in);
    return 0;
}

const double *ds_predictors_nonzero(const ds_predictors *p, int layer)
{
    if (!p || layer < 0 || layer >= p->n_layers)
        return NULL;
    return p->layers[layer].nonzero;
}

/* ------------------------------------------------------------------ CRC */

uint32_t ds_crc32(uint32_t crc, const void *p, size_t n)
{
    static uint32_t table[256];
    static int ready; /* benign race: every thread writes the same values */
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ----------------------------------------------------------- blob writer */

static int put(ds_buf *o, const void *p, size_t n, ds_error *err)
{
    return ds_buf_append(o, p, n, err);
}

static int put_u32(ds_buf *o, uint32_t v, ds_error *err)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return put(o, b, 4, err);
}

static int put_f64(ds_buf *o, double d, ds_error *err)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return put(o, b, 8, err);
}

static int put_f64s(ds_buf *o, const double *d, size_t n, ds_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (put_f64(o, d[i], err))
            return -1;
    return 0;
}

int ds_predictors_encode(const ds_predictors *p, ds_buf *out, ds_error *err)
{
    size_t start = out->len;
    uint8_t head[8] = {'D', 'S', 'P', 'R', DS_PRED_VERSION, 0, 0, 0};
    if (strlen(p->model_hash) != 16)
        return ds_errorf(err, "predictors: model hash \"%s\" is not 16 hex digits", p->model_hash);
    if (put(out, head, sizeof head, err) || put(out, p->model_hash, 16, err) ||
        put_u32(out, (uint32_t)p->n_layers, err))
        return -1;
    for (int i = 0; i < p->n_layers; i++) {
        const ds_layer_pred *lp = &p->layers[i];
        uint8_t rec[4] = {(uint8_t)lp->kind, (uint8_t)lp->n_in, 0, 0};
        if (put(out, rec, 4, err) || put_u32(out, (uint32_t)lp->n_out, err) ||
            put_u32(out, (uint32_t)lp->n_feat, err) || put_f64(out, lp->r2, err) ||
            put_f64(out, lp->mae, err))
            return -1;
        size_t no = (size_t)lp->n_out;
        if (lp->kind == DS_PRED_LINEAR) {
            for (size_t c = 0; c < no; c++)
                if (put_f64s(out, lp->a + c * (size_t)lp->n_in, (size_t)lp->n_in, err) ||
                    put_f64(out, lp->b[c], err))
                    return -1;
        } else if (lp->kind == DS_PRED_MLP) {
            if (put_f64s(out, lp->w, (size_t)lp->n_feat, err) || put_f64(out, lp->w0, err) ||
                put_f64s(out, lp->v, no, err) || put_f64s(out, lp->b, no, err))
                return -1;
        }
        if (put_f64s(out, lp->nonzero, no, err))
            return -1;
    }
    return put_u32(out, ds_crc32(0, out->data + start, out->len - start), err);
}

/* ----------------------------------------------------------- blob reader */

typedef struct reader {
    const uint8_t *p;
    size_t n, off;
} reader;

static int need(reader *r, size_t n) { return r->n - r->off >= n ? 0 : -1; }

static uint32_t get_u32(reader *r)
{
    const uint8_t *b = r->p + r->off;
    r->off += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static double get_f64(reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[r->off + (size_t)i] << (8 * i);
    r->off += 8;
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* Reads n finite doubles (the caller checked the length). */
static int get_f64s(reader *r, double *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(d[i] = get_f64(r)))
            return -1;
    return 0;
}

/* The fixed header (magic, version, flags, model hash, layer count) and the
 * trailing checksum; leaves r at the first layer record, r->n before the
 * checksum. */
static int decode_header(reader *r, const ds_model *m, ds_error *err)
{
    const uint8_t *blob = r->p;
    size_t len = r->n;
    if (len < 32)
        return ds_errorf(err, "predictors blob: %zu bytes, shorter than its header", len);
    if (memcmp(blob, DS_PRED_MAGIC, 4) != 0)
        return ds_errorf(err, "predictors blob: bad magic (not a predictors blob)");
    unsigned version = (unsigned)blob[4] | (unsigned)blob[5] << 8;
    if (version != DS_PRED_VERSION)
        return ds_errorf(err, "predictors blob: version %u, this build reads %d", version,
                         DS_PRED_VERSION);
    if (blob[6] || blob[7])
        return ds_errorf(err, "predictors blob: unknown flags 0x%02x%02x", blob[7], blob[6]);
    uint32_t crc_stored = (uint32_t)blob[len - 4] | (uint32_t)blob[len - 3] << 8 |
                          (uint32_t)blob[len - 2] << 16 | (uint32_t)blob[len - 1] << 24;
    if (ds_crc32(0, blob, len - 4) != crc_stored)
        return ds_errorf(err, "predictors blob: checksum mismatch (%zu bytes; damaged or cut short)",
                         len);
    r->n = len - 4;
    char hash[17];
    memcpy(hash, blob + 8, 16);
    hash[16] = 0;
    for (int i = 0; i < 16; i++)
        if (!((hash[i] >= '0' && hash[i] <= '9') || (hash[i] >= 'a' && hash[i] <= 'f')))
            return ds_errorf(err, "predictors blob: model hash is not 16 hex digits");
    if (strcmp(hash, m->hash) != 0)
        return ds_errorf(err, "predictors blob: for model %s, not %s (%s)", hash, m->hash, m->name);
    r->off = 24;
    uint32_t n_layers = get_u32(r);
    if (n_layers != (uint32_t)m->n_layers)
        return ds_errorf(err, "predictors blob: %u layers, model %s has %d", n_layers, m->name,
                         m->n_layers);
    return 0;
}

/* Layer i's record header: kind, sizes (which must match the model's layer,
 * allocated here with that kind) and fit quality. */
static int decode_layer_head(reader *r, ds_predictors *p, const ds_model *m, int i, ds_error *err)
{
    ds_layer_pred *lp = &p->layers[i];
    if (need(r, 4 + 4 + 4 + 16))
        return ds_errorf(err, "predictors blob: layer %d: record cut short at byte %zu", i, r->off);
    const uint8_t *rec = r->p + r->off;
    r->off += 4;
    unsigned kind = rec[0], n_in = rec[1];
    if (rec[2] || rec[3] || kind >= DS_PRED_KIND_COUNT)
        return ds_errorf(err, "predictors blob: layer %d: bad kind %u or reserved bytes", i, kind);
    if (ds_predictors_set_kind(p, m, i, (ds_pred_kind)kind, err)) {
        ds_error_prefix(err, "predictors blob");
        return -1;
    }
    uint32_t n_out = get_u32(r), n_feat = get_u32(r);
    if (n_in != (unsigned)lp->n_in || n_out != (uint32_t)lp->n_out || n_feat != (uint32_t)lp->n_feat)
        return ds_errorf(err,
                         "predictors blob: layer %d: %u inputs, %u channels, %u features; the "
                         "model's layer has %d, %d, %d",
                         i, n_in, n_out, n_feat, lp->n_in, lp->n_out, lp->n_feat);
    lp->r2 = get_f64(r);
    lp->mae = get_f64(r);
    if (isinf(lp->r2) || isinf(lp->mae))
        return ds_errorf(err, "predictors blob: layer %d: infinite fit quality", i);
    return 0;
}

/* Layer i's parameters (by its kind, sized by decode_layer_head) and
 * per-channel non-zero fractions. */
static int decode_layer_params(reader *r, ds_layer_pred *lp, int i, ds_error *err)
{
    size_t no = (size_t)lp->n_out, n_in = (size_t)lp->n_in, n_feat = (size_t)lp->n_feat, nparam = 0;
    if (lp->kind == DS_PRED_LINEAR)
        nparam = no * (n_in + 1);
    else if (lp->kind == DS_PRED_MLP)
        nparam = n_feat + 1 + 2 * no;
    /* Sizes are bounded by the model, but check them against the bytes
     * left before reading any. */
    if ((r->n - r->off) / 8 < nparam + no)
        return ds_errorf(err, "predictors blob: layer %d: %zu parameters cut short at byte %zu", i,
                         nparam + no, r->off);
    int bad = 0;
    if (lp->kind == DS_PRED_LINEAR) {
        for (size_t c = 0; c < no && !bad; c++)
            bad = get_f64s(r, lp->a + c * n_in, n_in) || get_f64s(r, lp->b + c, 1);
    } else if (lp->kind == DS_PRED_MLP) {
        bad = get_f64s(r, lp->w, n_feat) || get_f64s(r, &lp->w0, 1) || get_f64s(r, lp->v, no) ||
              get_f64s(r, lp->b, no);
    }
    if (bad)
        return ds_errorf(err, "predictors blob: layer %d: a parameter is not finite", i);
    for (size_t c = 0; c < no; c++) {
        double z = get_f64(r);
        if (!(z >= 0.0 && z <= 1.0))
            return ds_errorf(err, "predictors blob: layer %d: non-zero fraction %g of channel %zu "
                             "outside [0,1]", i, z, c);
        lp->nonzero[c] = z;
    }
    return 0;
}

int ds_predictors_decode(const uint8_t *blob, size_t len, const ds_model *m,
                         ds_predictors **out, ds_error *err)
{
    reader r = {blob, len, 0};
    if (decode_header(&r, m, err))
        return -1;
    ds_predictors *p = ds_predictors_new(m, err);
    if (!p)
        return -1;
    for (int i = 0; i < m->n_layers; i++)
        if (decode_layer_head(&r, p, m, i, err) || decode_layer_params(&r, &p->layers[i], i, err))
            goto fail;
    if (r.off != r.n) {
        ds_errorf(err, "predictors blob: %zu trailing bytes", r.n - r.off);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    ds_predictors_free(p);
    return -1;
}

/* test_partition.c - every zoo model at 1x3x64x96, split into 1-4 consecutive
 * jobs (seeded random cuts, empty jobs included), gives bit-identical
 * results to one full run on the same backend.  Under emulation two
 * partitions per model (one cut at articulations, one with an empty first job).
 *
 * A cut after position c hands on every layer <= c that a later layer reads
 * (plus graph outputs): one tensor on a chain, several across a DAG's
 * branches.  GoogLeNet and ResNet50 are cut both at articulation layers (one
 * tensor) and anywhere (several).  Every tensor handed on must also equal
 * that layer's output from a full run that requests every layer, so Conv+Relu
 * fusion never changes a requested value. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "emulated.h"
#include "engine/exec.h"
#include "model/model.h"
#include "model/zoo.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int rnd(int n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((rng >> 33) % (uint64_t)n);
}

/* ids <= c read by a layer > c, or graph outputs <= c; returns the count */
static int frontier(const ds_model *m, int c, int *ids)
{
    int n = 0;
    for (int id = 0; id <= c; id++) {
        int need = 0;
        for (int k = 0; k < m->layers[id].n_consumers; k++)
            need |= m->layers[id].consumers[k] > c;
        for (int k = 0; k < m->n_outputs; k++)
            need |= m->outputs[k] == id;
        if (need)
            ids[n++] = id;
    }
    return n;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Returns (in *result, if not NULL) the full run's first output. */
static void check_model(const char *name, ds_backend be, int n_parts, int h, int w,
                        ds_tensor *result)
{
    char spec[64];
    snprintf(spec, sizeof spec, "zoo:%s", name);
    ds_model m;
    ds_error err = {0};
    memset(&m, 0, sizeof m);
    if (ds_model_load(spec, &m, &err) || ds_model_set_input(&m, 1, 3, h, w, &err))
        fail_msg("%s: %s", spec, err.msg);
    const int n = m.n_layers;
    int *all = malloc((size_t)n * sizeof *all), *art = malloc((size_t)n * sizeof *art);
    int *fin = malloc((size_t)n * sizeof *fin), *fout = malloc((size_t)n * sizeof *fout);
    ds_tensor *every = calloc((size_t)n, sizeof *every);
    ds_tensor *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    ds_tensor x = {0}, fused = {0};
    assert_non_null(all);
    assert_non_null(every);
    for (int i = 0; i < n; i++)
        all[i] = i;
    int n_art = ds_model_articulations(&m, art);
    assert_true(n_art >= 2);
    assert_int_equal(art[0], 0);

    assert_int_equal(ds_tensor_reserve(&x, &m.layers[0].out_shape, DS_F32, NULL), 0);
    uint32_t seed = 12345; /* the same input for every backend */
    for (int64_t i = 0; i < ds_shape_numel(&x.shape); i++) {
        seed = seed * 1664525u + 1013904223u;
        ds_tensor_f32(&x)[i] = (float)(seed >> 8) / 16777216.0f;
    }
    ds_executor *ex = ds_executor_new(&m, be, 1, &err);
    if (!ex)
        fail_msg("%s", err.msg);
    int in0 = 0;
    const ds_tensor *inp0[1] = {&x};
    /* full run requesting every layer (nothing fused), and the usual one */
    ds_job full_all = {n - 1, all + 1, n, all};
    if (ds_executor_run(ex, &full_all, 1, &in0, inp0, every, &err))
        fail_msg("%s full: %s", name, err.msg);
    ds_job full = {n - 1, all + 1, 1, m.outputs};
    assert_true(m.n_outputs >= 1);
    if (ds_executor_run(ex, &full, 1, &in0, inp0, &fused, &err))
        fail_msg("%s full: %s", name, err.msg);
    const ds_tensor *want = &every[m.outputs[0]];
    assert_true(ds_shape_equal(&fused.shape, &want->shape));
    assert_memory_equal(fused.data, want->data, ds_tensor_bytes(want));
    for (int i = 0; i < n; i++)
        assert_true(ds_shape_equal(&every[i].shape, &m.layers[i].out_shape));

    for (int p = 0; p < n_parts; p++) {
        int jobs = 1 + rnd(4), cuts[5];
        int at_art = n_art > 2 && p % 2 == 0; /* single-tensor cuts */
        cuts[0] = 0;
        for (int j = 1; j < jobs; j++)
            cuts[j] = at_art ? art[rnd(n_art)] : rnd(n);
        cuts[jobs] = n - 1;
        qsort(cuts + 1, (size_t)(jobs - 1), sizeof *cuts, cmp_int);
        if (p == 1 && jobs > 1)
            cuts[1] = 0; /* an empty first job handing on the input */
        /* job j runs (cuts[j], cuts[j+1]]; a is what it receives */
        int n_in = frontier(&m, 0, fin);
        assert_int_equal(n_in, 1);
        assert_int_equal(ds_tensor_copy(&a[0], &x, NULL), 0);
        for (int j = 0; j < jobs; j++) {
            int lo = cuts[j], hi = cuts[j + 1];
            int n_out = frontier(&m, hi, fout);
            if (j == jobs - 1) {
                n_out = m.n_outputs;
                memcpy(fout, m.outputs, (size_t)n_out * sizeof *fout);
            }
            if (at_art && hi < n - 1)
                assert_int_equal(n_out, 1);
            const ds_tensor *inp[512];
            assert_true(n_in <= 512);
            for (int i = 0; i < n_in; i++)
                inp[i] = &a[i];
            ds_job job = {hi - lo, all + lo + 1, n_out, fout};
            if (ds_executor_run(ex, &job, n_in, fin, inp, b, &err))
                fail_msg("%s partition %d job %d (%d..%d]: %s", name, p, j, lo, hi, err.msg);
            for (int i = 0; i < n_out; i++) {
                const ds_tensor *e = &every[fout[i]];
                assert_true(ds_shape_equal(&b[i].shape, &e->shape));
                if (memcmp(b[i].data, e->data, ds_tensor_bytes(e)))
                    fail_msg("%s partition %d job %d: layer %d differs from the full run", name,
                             p, j, fout[i]);
            }
            /* hand on: b becomes the next job's a */
            ds_tensor *t = a;
            a = b;
            b = t;
            memcpy(fin, fout, (size_t)n_out * sizeof *fin);
            n_in = n_out;
        }
    }
    ds_executor_free(ex);
    if (result)
        assert_int_equal(ds_tensor_copy(result, &fused, NULL), 0);
    for (int i = 0; i < n; i++) {
        ds_tensor_free(&every[i]);
        ds_tensor_free(&a[i]);
        ds_tensor_free(&b[i]);
    }
    free(every);
    free(a);
    free(b);
    free(all);
    free(art);
    free(fin);
    free(fout);
    ds_tensor_free(&x);
    ds_tensor_free(&fused);
    ds_model_free(&m);
}

static void test_zoo_partitions(void **state)
{
    (void)state;
    const char *const *names = ds_zoo_names();
    int count = 0;
    for (int i = 0; names[i]; i++, count++)
        check_model(names[i], DS_BACKEND_XNNPACK, /* DAGs need more cut patterns */
                    ds_test_emulated() ? 2 : strstr(names[i], "vgg") ? 3 : 6, 64, 96, NULL);
    assert_true(count >= 5);
}

/* The reference backend: partitions are bit-identical too, and its answer
 * agrees with XNNPACK's (Winograd, fused, NHWC) within 1e-5 of the largest
 * magnitude. */
static void test_reference_partitions(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int parts, h, w;
    } cases[] = {{"alexnet", 2, 64, 96}, {"googlenet", 1, 64, 96}, {"resnet50", 1, 32, 48}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_tensor ref = {0}, fast = {0};
        check_model(cases[i].name, DS_BACKEND_REFERENCE, cases[i].parts, cases[i].h, cases[i].w,
                    &ref);
        check_model(cases[i].name, DS_BACKEND_XNNPACK, 0, cases[i].h, cases[i].w, &fast);
        assert_true(ds_shape_equal(&ref.shape, &fast.shape));
        double mx = 0, d = 0;
        for (int64_t k = 0; k < ds_shape_numel(&ref.shape); k++) {
            double a = ds_tensor_f32(&ref)[k], b = ds_tensor_f32(&fast)[k];
            mx = fabs(a) > mx ? fabs(a) : mx;
            d = fabs(a - b) > d ? fabs(a - b) : d;
        }
        printf("%s: xnnpack vs reference max diff %.3g of max magnitude %.3g\n", cases[i].name,
               d, mx);
        assert_true(mx > 0);
        if (d > 1e-5 * mx)
            fail_msg("%s: xnnpack differs from reference by %g (max %g)", cases[i].name, d, mx);
        ds_tensor_free(&ref);
        ds_tensor_free(&fast);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zoo_partitions),
        cmocka_unit_test(test_reference_partitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

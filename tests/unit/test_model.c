/* test_model.c - the zoo trunks through the loader: layer counts, output
 * shapes, articulation points, FLOPs, determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/model.h"
#include "model/op_table.h"
#include "model/zoo.h"

/* Expected output shapes were obtained once with python3-onnx 1.12's shape
 * inference (strict) on the written files with H, W fixed, and agree with
 * torchvision's trunks computed by hand (e.g. AlexNet at 480x720: conv1
 * 119x179, pools 59x89, 29x44, 14x21). */
typedef struct zoo_case {
    const char *name;
    int n_layers;       /* input + one per node, BN folded into convs */
    int64_t ch;         /* output channels */
    int64_t small[2];   /* output H, W at 64x96 */
    int64_t big[2];     /* output H, W at 480x720 */
    int n_artic;
} zoo_case;

static const zoo_case cases[] = {
    {"alexnet", 14, 256, {1, 2}, {14, 21}, 14},
    {"vgg16", 32, 512, {2, 3}, {15, 22}, 32},
    {"vgg19", 38, 512, {2, 3}, {15, 22}, 38},
    {"googlenet", 137, 1024, {2, 3}, {15, 23}, 20},
    {"resnet50", 120, 2048, {2, 3}, {15, 23}, 36},
};

static int find_layer(const ds_model *m, const char *name)
{
    for (int i = 0; i < m->n_layers; i++)
        if (!strcmp(m->layers[i].name, name))
            return i;
    fail_msg("no layer named %s", name);
    return -1;
}

static int in_set(const int *ids, int n, int id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static void check_dag(const ds_model *m)
{
    for (int i = 0; i < m->n_layers; i++) {
        const ds_layer *l = &m->layers[i];
        assert_int_equal(l->id, i);
        for (int k = 0; k < l->n_inputs; k++)
            assert_true(l->inputs[k] >= 0 && l->inputs[k] < i);
        for (int k = 0; k < l->n_consumers; k++) {
            assert_true(l->consumers[k] > i && l->consumers[k] < m->n_layers);
            if (k)
                assert_true(l->consumers[k] > l->consumers[k - 1]);
        }
    }
    assert_int_equal(m->layers[0].op, DS_OP_INPUT);
}

static void test_zoo_trunks(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const zoo_case *z = &cases[c];
        char spec[32];
        snprintf(spec, sizeof spec, "zoo:%s", z->name);
        ds_model m;
        ds_error err;
        if (ds_model_load(spec, &m, &err))
            fail_msg("%s: %s", spec, err.msg);
        assert_string_equal(m.name, spec);
        assert_int_equal(strlen(m.hash), 16);
        assert_int_equal(m.n_layers, z->n_layers);
        assert_int_equal(m.n_outputs, 1);
        assert_int_equal(m.outputs[0], m.n_layers - 1);
        assert_int_equal(m.opset, 13);
        assert_true(ds_shape_equal(&m.input_shape, &(ds_shape){4, {1, 3, 0, 0}}));
        check_dag(&m);
        for (int i = 0; i < m.n_layers; i++)
            assert_true(m.layers[i].op != DS_OP_BATCHNORM); /* all folded */

        const ds_shape *out = &m.layers[m.outputs[0]].out_shape;
        assert_int_equal(ds_model_set_input(&m, 1, 3, 64, 96, &err), 0);
        assert_true(ds_shape_equal(out, &(ds_shape){4, {1, z->ch, z->small[0], z->small[1]}}));
        assert_int_equal(ds_model_set_input(&m, 1, 3, 480, 720, &err), 0);
        assert_true(ds_shape_equal(out, &(ds_shape){4, {1, z->ch, z->big[0], z->big[1]}}));

        int *ids = malloc((size_t)m.n_layers * sizeof(int));
        assert_non_null(ids);
        int n = ds_model_articulations(&m, ids);
        assert_int_equal(n, z->n_artic);
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[n - 1], m.n_layers - 1);
        for (int i = 1; i < n; i++)
            assert_true(ids[i] > ids[i - 1]);
        if (!strcmp(z->name, "googlenet")) {
            /* Between inception blocks only. */
            assert_true(in_set(ids, n, find_layer(&m, "maxpool2")));
            assert_true(in_set(ids, n, find_layer(&m, "inception3a.concat")));
            assert_true(in_set(ids, n, find_layer(&m, "maxpool3")));
            assert_true(in_set(ids, n, find_layer(&m, "inception4e.concat")));
            assert_false(in_set(ids, n, find_layer(&m, "inception4a.branch1.conv")));
            assert_false(in_set(ids, n, find_layer(&m, "inception4a.branch4.0")));
            assert_false(in_set(ids, n, find_layer(&m, "inception5b.branch3.1.relu")));
            /* torchvision's shapes inside a block at 480x720. */
            assert_true(ds_shape_equal(&m.layers[find_layer(&m, "inception3a.concat")].out_shape,
                                       &(ds_shape){4, {1, 256, 60, 90}}));
            assert_true(ds_shape_equal(&m.layers[find_layer(&m, "inception4a.concat")].out_shape,
                                       &(ds_shape){4, {1, 512, 30, 45}}));
            assert_int_equal(m.layers[find_layer(&m, "inception3a.concat")].n_inputs, 4);
        }
        if (!strcmp(z->name, "resnet50")) {
            /* After each residual Add/Relu, never inside a block. */
            assert_true(in_set(ids, n, find_layer(&m, "maxpool")));
            assert_true(in_set(ids, n, find_layer(&m, "layer1.0.add")));
            assert_true(in_set(ids, n, find_layer(&m, "layer2.3.relu3")));
            assert_false(in_set(ids, n, find_layer(&m, "layer2.3.conv1")));
            assert_false(in_set(ids, n, find_layer(&m, "layer3.0.downsample.0")));
            assert_true(ds_shape_equal(&m.layers[find_layer(&m, "layer2.0.relu3")].out_shape,
                                       &(ds_shape){4, {1, 512, 60, 90}}));
            const ds_layer *add = &m.layers[find_layer(&m, "layer3.0.add")];
            assert_int_equal(add->op, DS_OP_ADD);
            assert_int_equal(add->inputs[0], find_layer(&m, "layer3.0.conv3"));
            assert_int_equal(add->inputs[1], find_layer(&m, "layer3.0.downsample.0"));
            assert_int_equal(m.layers[find_layer(&m, "layer3.0.conv2")].stride[0], 2);
        }
        free(ids);

        /* FLOPs: convs dominate and match 2*MACs by hand for layer 1. */
        const ds_layer *l1 = &m.layers[1];
        assert_int_equal(l1->op, DS_OP_CONV);
        double want = 2.0 * (double)ds_shape_numel(&l1->out_shape) * 3 * l1->kernel[0] * l1->kernel[1];
        assert_true(ds_layer_flops(&m, 1) == want);
        double total = 0;
        for (int i = 0; i < m.n_layers; i++)
            total += ds_layer_flops(&m, i);
        print_message("%s: %d layers, %d cut points, %.1f GFLOP at 480x720\n", z->name, m.n_layers, n, total / 1e9);
        if (strcmp(z->name, "resnet50")) { /* resnet50 takes even 1x1 */
            assert_int_equal(ds_model_set_input(&m, 1, 3, 8, 8, &err), -1);
            assert_non_null(strstr(err.msg, spec));
        }
        ds_model_free(&m);
    }
}

static void test_alexnet_layers(void **state)
{
    (void)state;
    ds_model m;
    ds_error err;
    assert_int_equal(ds_model_load("zoo:alexnet", &m, &err), 0);
    static const ds_op ops[14] = {DS_OP_INPUT, DS_OP_CONV, DS_OP_RELU, DS_OP_MAXPOOL, DS_OP_CONV,
                                  DS_OP_RELU,  DS_OP_MAXPOOL, DS_OP_CONV, DS_OP_RELU, DS_OP_CONV,
                                  DS_OP_RELU,  DS_OP_CONV, DS_OP_RELU, DS_OP_MAXPOOL};
    for (int i = 0; i < 14; i++)
        assert_int_equal(m.layers[i].op, ops[i]);
    assert_string_equal(m.layers[1].name, "features.0");
    assert_int_equal(m.layers[1].kernel[0], 11);
    assert_int_equal(m.layers[1].stride[1], 4);
    assert_int_equal(m.layers[1].pads[3], 2);
    assert_true(ds_shape_equal(&m.layers[1].weight.shape, &(ds_shape){4, {64, 3, 11, 11}}));
    assert_int_equal(m.layers[1].bias.shape.dims[0], 64);
    assert_int_equal(ds_model_set_input(&m, 1, 3, 480, 720, &err), 0);
    assert_true(ds_shape_equal(&m.layers[1].out_shape, &(ds_shape){4, {1, 64, 119, 179}}));
    assert_true(ds_shape_equal(&m.layers[3].out_shape, &(ds_shape){4, {1, 64, 59, 89}}));
    assert_true(ds_shape_equal(&m.layers[6].out_shape, &(ds_shape){4, {1, 192, 29, 44}}));
    /* He init: the first conv's weights have std close to sqrt(2/363). */
    double s2 = 0;
    int64_t nw = ds_shape_numel(&m.layers[1].weight.shape);
    for (int64_t i = 0; i < nw; i++)
        s2 += (double)ds_tensor_f32(&m.layers[1].weight)[i] * ds_tensor_f32(&m.layers[1].weight)[i];
    double var = s2 / (double)nw, want = 2.0 / 363.0;
    assert_true(var > 0.9 * want && var < 1.1 * want);
    int ids[14];
    assert_int_equal(ds_model_articulations(&m, ids), 14);
    for (int i = 0; i < 14; i++)
        assert_int_equal(ids[i], i);
    ds_model_free(&m);
}

static void test_zoo_deterministic(void **state)
{
    (void)state;
    uint8_t *a, *b, *c;
    size_t la, lb, lc;
    ds_error err;
    assert_int_equal(ds_zoo_build("googlenet", 7, &a, &la, &err), 0);
    assert_int_equal(ds_zoo_build("googlenet", 7, &b, &lb, &err), 0);
    assert_int_equal(ds_zoo_build("googlenet", 8, &c, &lc, &err), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    assert_true(la != lc || memcmp(a, c, la) != 0);
    ds_model m1, m2;
    assert_int_equal(ds_model_load_onnx(a, la, "a", &m1, &err), 0);
    assert_int_equal(ds_model_load_onnx(c, lc, "c", &m2, &err), 0);
    assert_string_not_equal(m1.hash, m2.hash);
    ds_model_free(&m1);
    ds_model_free(&m2);
    free(a);
    free(b);
    free(c);
    assert_int_equal(ds_zoo_build("nope", 1, &a, &la, &err), -1);
    assert_non_null(strstr(err.msg, "alexnet"));
    int n = 0;
    for (const char *const *p = ds_zoo_names(); *p; p++)
        n++;
    assert_int_equal(n, 5);
}

/* Every op has a complete entry in the op table (a designated initializer
 * left out would leave a hole the _Static_assert on the count misses). */
static void test_op_table(void **state)
{
    (void)state;
    for (int op = 0; op < DS_OP_COUNT; op++) {
        const ds_op_def *d = &ds_op_defs[op];
        assert_non_null(d->name);
        assert_string_equal(ds_op_name((ds_op)op), d->name);
        for (int k = 0; k < op; k++)
            assert_true(strcmp(ds_op_defs[k].name, d->name) != 0);
        assert_true((unsigned)ds_op_pred_kind((ds_op)op) < DS_PRED_KIND_COUNT);
        if (op == DS_OP_INPUT || op == DS_OP_SILU) { /* made by the loader, never read from a node */
            assert_null(d->parse);
            assert_null(d->onnx_types[0]);
            if (op == DS_OP_SILU)
                assert_non_null(d->shape);
            continue;
        }
        assert_non_null(d->onnx_types[0]);
        assert_non_null(d->parse);
        assert_non_null(d->shape);
        assert_true(d->arity == -1 || d->arity >= 1);
    }
    assert_string_equal(ds_op_name(DS_OP_COUNT), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_table),
        cmocka_unit_test(test_alexnet_layers),
        cmocka_unit_test(test_zoo_trunks),
        cmocka_unit_test(test_zoo_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

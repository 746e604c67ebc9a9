/* test_onnx_node.c - the ONNX backend node test cases Debian ships in
 * libonnx-testdata (/usr/share/libonnx-testdata/data/node), run on both
 * backends and compared with ONNX's expected outputs.
 *
 * Each case: model.onnx; test_data_set_0/input_0.pb is the network input,
 * input_1.pb.. are bound as constants (weights, the second addend, ...);
 * output_0.pb is the expected output.  Tolerance: |got - want| <= 1e-6 +
 * 1e-4 |want| (tighter than ONNX's own 1e-3 / 1e-7).
 *
 * Cases that run (and must match): see `cases` below with expect RUN.
 * Cases listed as REJECT must fail to load with a message (the loader or
 * the input-size rule refuses them); the reason is in the table.  Cases not
 * listed at all are outside the supported op set (ConvTranspose,
 * ConvInteger, MaxPool with argmax, uint8, 1-D/3-D pools, training-mode
 * BatchNorm, Dropout with a mask output, optional/sequence Identity). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/exec.h"
#include "model/model.h"

#define NODE_DIR "/usr/share/libonnx-testdata/data/node"

/* LIFT: an element-wise case whose 1-D or 3-D input runs as 4-D with
 * leading 1s (the values, and ONNX's right-aligned broadcasting, stay the
 * same), which also exercises the XNNPACK backend's NHWC layout. */
enum { RUN, REJECT, LIFT };

typedef struct node_case {
    const char *name;
    int expect;
    const char *why; /* for REJECT */
} node_case;

static const node_case cases[] = {
    /* why: the loader's message when it refuses the case */
    {"test_add", LIFT, NULL},
    {"test_add_bcast", LIFT, NULL},
    {"test_add_uint8", REJECT, "ONNX tensor \"x\": element type is uint8, float expected"},
    {"test_averagepool_1d_default", REJECT, "node \"y\" (AveragePool): unsupported attribute kernel_shape with 1 values (only 2-D: 2 expected)"},
    {"test_averagepool_2d_ceil", RUN, NULL},
    {"test_averagepool_2d_default", RUN, NULL},
    {"test_averagepool_2d_pads", RUN, NULL},
    {"test_averagepool_2d_pads_count_include_pad", RUN, NULL},
    {"test_averagepool_2d_precomputed_pads", RUN, NULL},
    {"test_averagepool_2d_precomputed_pads_count_include_pad", RUN, NULL},
    {"test_averagepool_2d_precomputed_same_upper", RUN, NULL},
    {"test_averagepool_2d_precomputed_strides", RUN, NULL},
    {"test_averagepool_2d_same_lower", RUN, NULL},
    {"test_averagepool_2d_same_upper", RUN, NULL},
    {"test_averagepool_2d_strides", RUN, NULL},
    {"test_averagepool_3d_default", REJECT, "node \"y\" (AveragePool): unsupported attribute kernel_shape with 3 values (only 2-D: 2 expected)"},
    {"test_basic_conv_with_padding", RUN, NULL},
    {"test_basic_conv_without_padding", RUN, NULL},
    {"test_batchnorm_epsilon", RUN, NULL},
    {"test_batchnorm_example", RUN, NULL},
    {"test_clip", LIFT, NULL},
    {"test_clip_default_inbounds", LIFT, NULL},
    {"test_clip_default_int8_inbounds", REJECT, "ONNX tensor \"x\": element type is int8, float expected"},
    {"test_clip_default_int8_max", REJECT, "ONNX tensor \"x\": element type is int8, float expected"},
    {"test_clip_default_int8_min", REJECT, "ONNX tensor \"x\": element type is int8, float expected"},
    {"test_clip_default_max", LIFT, NULL},
    {"test_clip_default_min", LIFT, NULL},
    {"test_clip_example", LIFT, NULL},
    {"test_clip_inbounds", LIFT, NULL},
    {"test_clip_outbounds", LIFT, NULL},
    {"test_clip_splitbounds", LIFT, NULL},
    {"test_concat_1d_axis_0", REJECT, "node \"output\" (Concat): unsupported attribute axis=0 (only the channel axis 1 or -3)"},
    {"test_concat_1d_axis_negative_1", REJECT, "node \"output\" (Concat): unsupported attribute axis=-1 (only the channel axis 1 or -3)"},
    {"test_concat_2d_axis_0", REJECT, "node \"output\" (Concat): unsupported attribute axis=0 (only the channel axis 1 or -3)"},
    {"test_concat_2d_axis_1", REJECT, "node \"output\" (Concat): input \"value1\" is a constant; only layer outputs are supported there"},
    {"test_concat_2d_axis_negative_1", REJECT, "node \"output\" (Concat): unsupported attribute axis=-1 (only the channel axis 1 or -3)"},
    {"test_concat_2d_axis_negative_2", REJECT, "node \"output\" (Concat): unsupported attribute axis=-2 (only the channel axis 1 or -3)"},
    {"test_concat_3d_axis_0", REJECT, "node \"output\" (Concat): unsupported attribute axis=0 (only the channel axis 1 or -3)"},
    {"test_concat_3d_axis_1", REJECT, "node \"output\" (Concat): input \"value1\" is a constant; only layer outputs are supported there"},
    {"test_concat_3d_axis_2", REJECT, "node \"output\" (Concat): unsupported attribute axis=2 (only the channel axis 1 or -3)"},
    {"test_concat_3d_axis_negative_1", REJECT, "node \"output\" (Concat): unsupported attribute axis=-1 (only the channel axis 1 or -3)"},
    {"test_concat_3d_axis_negative_2", REJECT, "node \"output\" (Concat): unsupported attribute axis=-2 (only the channel axis 1 or -3)"},
    {"test_concat_3d_axis_negative_3", REJECT, "node \"output\" (Concat): input \"value1\" is a constant; only layer outputs are supported there"},
    {"test_conv_with_autopad_same", RUN, NULL},
    {"test_conv_with_strides_and_asymmetric_padding", RUN, NULL},
    {"test_conv_with_strides_no_padding", RUN, NULL},
    {"test_conv_with_strides_padding", RUN, NULL},
    {"test_div", LIFT, NULL},
    {"test_div_bcast", LIFT, NULL},
    {"test_div_example", LIFT, NULL},
    {"test_div_uint8", REJECT, "ONNX tensor \"x\": element type is uint8, float expected"},
    {"test_dropout_default", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_dropout_default_mask", REJECT, "graph output \"z\" is the mask output of Dropout, not a layer output"},
    {"test_dropout_default_mask_ratio", REJECT, "graph output \"z\" is the mask output of Dropout, not a layer output"},
    {"test_dropout_default_old", REJECT, "1-D network input (only 4-D and 2-D are supported)"},
    {"test_dropout_default_ratio", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_dropout_random_old", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_flatten_axis0", RUN, NULL},
    {"test_flatten_axis1", RUN, NULL},
    {"test_flatten_axis2", RUN, NULL},
    {"test_flatten_axis3", RUN, NULL},
    {"test_flatten_default_axis", RUN, NULL},
    {"test_flatten_negative_axis1", RUN, NULL},
    {"test_flatten_negative_axis2", RUN, NULL},
    {"test_flatten_negative_axis3", RUN, NULL},
    {"test_flatten_negative_axis4", RUN, NULL},
    {"test_gemm_all_attributes", REJECT, "node \"y\" (Gemm): unsupported attribute transA=1 (expected 0..0)"},
    {"test_gemm_alpha", RUN, NULL},
    {"test_gemm_beta", RUN, NULL},
    {"test_gemm_default_matrix_bias", REJECT, "node \"y\" (Gemm): bias has shape with 12 elements; 4 (or 1) expected"},
    {"test_gemm_default_no_bias", RUN, NULL},
    {"test_gemm_default_scalar_bias", RUN, NULL},
    {"test_gemm_default_single_elem_vector_bias", RUN, NULL},
    {"test_gemm_default_vector_bias", RUN, NULL},
    {"test_gemm_default_zero_bias", RUN, NULL},
    {"test_globalaveragepool", REJECT, "opset 1 is not supported (9..17)"},
    {"test_globalaveragepool_precomputed", REJECT, "opset 1 is not supported (9..17)"},
    {"test_hardsigmoid", REJECT, "opset 6 is not supported (9..17)"},
    {"test_hardsigmoid_default", REJECT, "opset 6 is not supported (9..17)"},
    {"test_hardsigmoid_example", REJECT, "opset 6 is not supported (9..17)"},
    {"test_hardswish", LIFT, NULL},
    {"test_hardswish_expanded", LIFT, NULL},
    {"test_identity", RUN, NULL},
    {"test_leakyrelu", LIFT, NULL},
    {"test_leakyrelu_default", LIFT, NULL},
    {"test_leakyrelu_example", LIFT, NULL},
    {"test_lrn", RUN, NULL},
    {"test_lrn_default", RUN, NULL},
    {"test_matmul_2d", RUN, NULL},
    {"test_matmul_3d", REJECT, "node \"c\" (MatMul): weight has 0 dimensions; a 2-D constant is expected"},
    {"test_matmul_4d", REJECT, "node \"c\" (MatMul): weight has 0 dimensions; a 2-D constant is expected"},
    {"test_maxpool_1d_default", REJECT, "node \"y\" (MaxPool): unsupported attribute kernel_shape with 1 values (only 2-D: 2 expected)"},
    {"test_maxpool_2d_ceil", RUN, NULL},
    {"test_maxpool_2d_default", RUN, NULL},
    {"test_maxpool_2d_dilations", REJECT, "node \"y\" (MaxPool): unsupported attribute dilations=[2, 2] (only 1)"},
    {"test_maxpool_2d_pads", RUN, NULL},
    {"test_maxpool_2d_precomputed_pads", RUN, NULL},
    {"test_maxpool_2d_precomputed_same_upper", RUN, NULL},
    {"test_maxpool_2d_precomputed_strides", RUN, NULL},
    {"test_maxpool_2d_same_lower", RUN, NULL},
    {"test_maxpool_2d_same_upper", RUN, NULL},
    {"test_maxpool_2d_strides", RUN, NULL},
    {"test_mul", LIFT, NULL},
    {"test_mul_bcast", LIFT, NULL},
    {"test_mul_example", LIFT, NULL},
    {"test_mul_uint8", REJECT, "ONNX tensor \"x\": element type is uint8, float expected"},
    {"test_prelu_broadcast", LIFT, NULL},
    {"test_prelu_example", LIFT, NULL},
    {"test_maxpool_3d_default", REJECT, "node \"y\" (MaxPool): unsupported attribute kernel_shape with 3 values (only 2-D: 2 expected)"},
    {"test_relu", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_sigmoid", LIFT, NULL},
    {"test_sigmoid_example", LIFT, NULL},
    {"test_softmax_axis_0", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_softmax_axis_1", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_softmax_axis_2", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_softmax_default_axis", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_softmax_example", RUN, NULL},
    {"test_softmax_large_number", RUN, NULL},
    {"test_softmax_negative_axis", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_sub", LIFT, NULL},
    {"test_sub_bcast", LIFT, NULL},
    {"test_sub_example", LIFT, NULL},
    {"test_sub_uint8", REJECT, "ONNX tensor \"x\": element type is uint8, float expected"},
    /* Structural ops and shape arithmetic (most cases have a 3-D input this
     * harness cannot feed; tests/unit/test_ops_shape.c runs 4-D ones). */
    {"test_squeeze", RUN, NULL},
    {"test_squeeze_negative_axes", RUN, NULL},
    {"test_reshape_reordered_all_dims", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_reshape_zero_and_negative_dim", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_transpose_default", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_transpose_all_permutations_0", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_unsqueeze_axis_0", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_unsqueeze_two_axes", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_unsqueeze_negative_axes", RUN, NULL},
    {"test_shape", REJECT, "graph output \"y\" is shape arithmetic (folded, not a tensor of data), not a layer output"},
    {"test_shape_start_1_end_negative_1", REJECT, "graph output \"y\" is shape arithmetic (folded, not a tensor of data), not a layer output"},
    {"test_gather_0", REJECT, "node \"y\" (Gather): unsupported op type"},
    {"test_constant_pad", RUN, NULL},
    {"test_edge_pad", REJECT, "network input \"x\" has element type int32; float expected"},
    {"test_slice", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_slice_neg_steps", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_resize_downsample_scales_linear", RUN, NULL},
    {"test_resize_downsample_scales_linear_align_corners", RUN, NULL},
    {"test_resize_downsample_scales_nearest", RUN, NULL},
    {"test_resize_downsample_sizes_linear_pytorch_half_pixel", RUN, NULL},
    {"test_resize_downsample_sizes_nearest", RUN, NULL},
    {"test_resize_upsample_scales_linear", RUN, NULL},
    {"test_resize_upsample_scales_linear_align_corners", RUN, NULL},
    {"test_resize_upsample_scales_nearest", RUN, NULL},
    {"test_resize_upsample_sizes_nearest", RUN, NULL},
    {"test_resize_upsample_sizes_nearest_ceil_half_pixel", RUN, NULL},
    {"test_resize_upsample_sizes_nearest_floor_align_corners", RUN, NULL},
    {"test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric", RUN, NULL},
    {"test_upsample_nearest", RUN, NULL},
    {"test_resize_upsample_scales_cubic", REJECT, "node \"Y\" (Resize): unsupported attribute mode=\"cubic\""},
    {"test_resize_tf_crop_and_resize", REJECT, "node \"Y\" (Resize): unsupported attribute coordinate_transformation_mode=\"tf_crop_and_resize\""},
    {"test_split_equal_parts_2d", RUN, NULL},
    {"test_split_variable_parts_2d", RUN, NULL},
    {"test_split_zero_size_splits", REJECT, "node \"output_1\" (Split): split size 0 (empty outputs are not supported)"},
    {"test_reduce_mean_keepdims_example", REJECT, "3-D network input (only 4-D and 2-D are supported)"},
    {"test_constantofshape_int_zeros", REJECT, "network input \"x\" has element type int64; float expected"},
};

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (!b) {
            fclose(f);
            return -1;
        }
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        b = realloc(b, cap);
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
}

/* s with leading 1s up to 4 dims. */
static void lift4(ds_shape *s)
{
    int k = 4 - s->ndim;
    for (int d = 3; d >= 0; d--)
        s->dims[d] = d >= k ? s->dims[d - k] : 1;
    s->ndim = 4;
}

static int read_tensor(const char *dir, const char *file, ds_tensor *t, ds_error *err)
{
    char path[1024];
    uint8_t *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/test_data_set_0/%s", dir, file);
    if (read_file(path, &buf, &len))
        return ds_errorf(err, "cannot read %s", path);
    int rc = ds_onnx_read_tensor(buf, len, t, err);
    free(buf);
    return rc;
}

/* Returns 0 ran and matched, 1 rejected with a message (err), -1 mismatch
 * or crash-free failure after loading (message in err). */
static int run_case(const char *name, int lift, ds_error *err)
{
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/%s", NODE_DIR, name);
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    uint8_t *buf;
    size_t len;
    if (read_file(path, &buf, &len)) {
        ds_errorf(err, "cannot read %s", path);
        return -2;
    }
    ds_tensor in[8] = {0}, want = {0}, got[2] = {0};
    int n_in = 0, rc = 1;
    ds_model m;
    memset(&m, 0, sizeof m);
    for (; n_in < 8; n_in++) {
        char f[32];
        snprintf(f, sizeof f, "input_%d.pb", n_in);
        snprintf(path, sizeof path, "%s/test_data_set_0/%s", dir, f);
        FILE *probe = fopen(path, "rb");
        if (!probe)
            break;
        fclose(probe);
        if (read_tensor(dir, f, &in[n_in], err))
            goto done;
    }
    if (n_in < 1 || read_tensor(dir, "output_0.pb", &want, err))
        goto done;
    if (ds_model_load_onnx_bound(buf, len, name, in + 1, n_in - 1, &m, err))
        goto done;
    ds_shape *s = &in[0].shape;
    if (lift && s->ndim != 4) {
        lift4(s);
        m.input_shape.ndim = 0; /* the declared 1-D/3-D shape no longer applies */
    }
    if (s->ndim != 4 && s->ndim != 2) {
        ds_errorf(err, "%s: %d-D network input (only 4-D and 2-D are supported)", name, s->ndim);
        goto done;
    }
    if (ds_model_set_input(&m, s->dims[0], s->dims[1], s->ndim == 4 ? s->dims[2] : 1,
                           s->ndim == 4 ? s->dims[3] : 1, err))
        goto done;
    rc = -1;
    int *ids = malloc((size_t)m.n_layers * sizeof *ids);
    for (int i = 1; i < m.n_layers; i++)
        ids[i - 1] = i;
    ds_job job = {m.n_layers - 1, ids, 1, m.outputs};
    int in_id = 0;
    const ds_tensor *inp[1] = {&in[0]};
    for (int be = 0; be < 2; be++) {
        ds_executor *ex = ds_executor_new(&m, (ds_backend)be, 1 + be, err);
        if (!ex)
            goto out;
        int r = ds_executor_run(ex, &job, 1, &in_id, inp, &got[be], err);
        ds_executor_free(ex);
        if (r)
            goto out;
        char a[64], b[64];
        if (ds_shape_numel(&got[be].shape) != ds_shape_numel(&want.shape)) {
            ds_errorf(err, "%s (%s): output %s, expected %s", name, ds_backend_name(be),
                      ds_shape_str(&got[be].shape, a, sizeof a),
                      ds_shape_str(&want.shape, b, sizeof b));
            goto out;
        }
        for (int64_t i = 0; i < ds_shape_numel(&want.shape); i++) {
            double g = ds_tensor_f32(&got[be])[i], w = ds_tensor_f32(&want)[i];
            if (!(fabs(g - w) <= 1e-6 + 1e-4 * fabs(w))) {
                ds_errorf(err, "%s (%s): element %lld is %.9g, expected %.9g", name,
                          ds_backend_name(be), (long long)i, g, w);
                goto out;
            }
        }
    }
    rc = 0;
out:
    free(ids);
done:
    for (int i = 0; i < 8; i++)
        ds_tensor_free(&in[i]);
    ds_tensor_free(&want);
    ds_tensor_free(&got[0]);
    ds_tensor_free(&got[1]);
    ds_model_free(&m);
    free(buf);
    return rc;
}

static void test_node_cases(void **state)
{
    (void)state;
    int ran = 0, rejected = 0, failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_error err = {0};
        int rc = run_case(cases[i].name, cases[i].expect == LIFT, &err);
        if (rc == 0 && cases[i].expect != REJECT) {
            ran++;
        } else if (rc == 1 && cases[i].expect == REJECT && err.msg[0]) {
            rejected++;
        } else {
            failed++;
            printf("FAIL %s (expected %s, got %s): %s\n", cases[i].name,
                   cases[i].expect != REJECT ? "a match" : "a rejection",
                   rc == 0 ? "a match" : rc == 1 ? "a rejection" : "a failure", err.msg);
        }
    }
    printf("onnx node cases: %d ran and matched, %d rejected as expected, %d failed\n", ran,
           rejected, failed);
    assert_int_equal(failed, 0);
    assert_true(ran >= 40);
}

int main(int argc, char **argv)
{
    if (argc > 1) { /* explore: test_onnx_node CASE... prints the outcome of each */
        for (int i = 1; i < argc; i++) {
            ds_error err = {0};
            int rc = run_case(argv[i], getenv("DS_LIFT") != NULL, &err);
            printf("%-50s %s %s\n", argv[i], rc == 0 ? "RUN" : rc == 1 ? "REJECT" : "FAIL",
                   err.msg);
        }
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

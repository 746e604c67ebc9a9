/* test_engine_profile.c - ds_profile_model: per-layer medians and FLOPs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/profile.h"

static void test_profile_alexnet(void **state)
{
    (void)state;
    ds_model m;
    ds_error err = {0};
    memset(&m, 0, sizeof m);
    if (ds_model_load("zoo:alexnet", &m, &err) || ds_model_set_input(&m, 1, 3, 64, 96, &err))
        fail_msg("%s", err.msg);
    for (int be = 0; be < 2; be++) {
        ds_profile p;
        if (ds_profile_model(&m, (ds_backend)be, 1, 3, 0, &p, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(p.n_layers, m.n_layers);
        assert_int_equal(p.runs, 3);
        assert_true(p.seconds[0] == 0 && p.flops[0] == 0);
        double sum = 0;
        for (int i = 1; i < m.n_layers; i++) {
            assert_true(p.seconds[i] >= 0);
            assert_true(p.flops[i] == ds_layer_flops(&m, i));
            if (m.layers[i].op == DS_OP_CONV) {
                assert_true(p.seconds[i] > 0);
                assert_true(p.flops[i] > 0);
            }
            sum += p.seconds[i];
        }
        /* the layers are (nearly) all of a run; medians need not add up exactly */
        assert_true(p.total > 0);
        assert_true(sum <= 2.0 * p.total && sum >= 0.3 * p.total);
        ds_profile_free(&p);
    }
    ds_profile p;
    assert_int_equal(ds_profile_model(&m, DS_BACKEND_XNNPACK, 1, 0, 0, &p, &err), -1);
    assert_non_null(strstr(err.msg, "run count"));
    assert_int_equal(ds_profile_model(&m, DS_BACKEND_XNNPACK, 0, 2, 0, &p, &err), -1);
    ds_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_alexnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

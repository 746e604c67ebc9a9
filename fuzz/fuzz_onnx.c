/* fuzz_onnx.c - libFuzzer target: arbitrary bytes through the ONNX loader,
 * shape computation and articulation search.  Any crash, leak, UB or
 * allocation beyond libFuzzer's -rss_limit_mb is a bug: the loader bounds
 * every tensor by the bytes actually present. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_model m;
    ds_error err;
    if (ds_model_load_onnx(data, size, "fuzz.onnx", &m, &err))
        return 0;
    if (ds_model_set_input(&m, 1, 3, 32, 32, &err) == 0 && m.n_layers > 0) {
        int *ids = malloc((size_t)m.n_layers * sizeof(int));
        if (ids) {
            ds_model_articulations(&m, ids);
            free(ids);
        }
        for (int i = 0; i < m.n_layers; i++)
            (void)ds_layer_flops(&m, i);
    }
    /* The file's own fixed input shape reaches the deeper shape code too. */
    const ds_shape *d = &m.input_shape;
    if (d->ndim == 4 && d->dims[0] > 0 && d->dims[1] > 0 && d->dims[2] > 0 && d->dims[3] > 0)
        (void)ds_model_set_input(&m, d->dims[0], d->dims[1], d->dims[2], d->dims[3], &err);
    else if (d->ndim == 2 && d->dims[0] > 0 && d->dims[1] > 0)
        (void)ds_model_set_input(&m, d->dims[0], d->dims[1], 1, 1, &err);
    ds_model_free(&m);
    return 0;
}

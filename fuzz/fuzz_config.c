/* libFuzzer target: arbitrary bytes as a configuration file. */
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_config cfg;
    ds_error err;
    if (ds_config_parse((const char *)data, size, "fuzz.yml", "/base", &cfg, &err) == 0)
        ds_config_free(&cfg);
    return 0;
}

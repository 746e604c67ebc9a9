/* emulated.h - whether the tests run under an emulator (qemu-user: the cross
 * build's ctest sets DS_EMULATED=1), where code runs 10-50x slower: slow tests
 * then take smaller sizes or fewer frames, never skip their checks. */
#ifndef DS_TEST_EMULATED_H
#define DS_TEST_EMULATED_H

#include <stdlib.h>
#include <string.h>

static inline int ds_test_emulated(void)
{
    const char *e = getenv("DS_EMULATED");
    return e && *e && strcmp(e, "0") != 0;
}

#endif

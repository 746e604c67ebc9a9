/* fuzz_auth - a call's metadata through the server's token check
 * (ds_rpc_authenticate, src/rpc/security.h).
 *
 * Input: byte 0 = the server's token length (% 33; 0 = no token: every call
 * passes), then the token's bytes (a NUL becomes 'x': the token is a C
 * string), then entries: key kind (% 5: "authorization", "Authorization",
 * "authorization-x", "auth", "x-other"), a mode byte, a value length, then
 * that many value bytes.  With bit 0 of the mode byte the value is instead
 * the right "Bearer <token>" with the byte at (next byte % its length) XORed
 * with the byte after (XOR 0 leaves it right): the check is constant time,
 * so the fuzzer cannot learn the secret from comparisons and needs these
 * near misses.  Property: a call passes, with identity "token", exactly when
 * the first "authorization" entry is "Bearer <token>" byte for byte;
 * otherwise it fails with a reason and no identity. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/security.h"

#define MAX_ENTRIES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"authorization", "Authorization", "authorization-x",
                                       "auth", "x-other"};
    if (size < 1)
        return 0;
    size_t tlen = data[0] % 33u, at = 1;
    if (size < at + tlen)
        return 0;
    char token[33], bearer[40] = "Bearer ";
    for (size_t i = 0; i < tlen; i++)
        token[i] = data[at + i] ? (char)data[at + i] : 'x';
    token[tlen] = '\0';
    at += tlen;
    strcat(bearer, token);
    size_t blen = strlen(bearer);

    grpc_metadata md[MAX_ENTRIES];
    uint8_t values[MAX_ENTRIES][256];
    grpc_metadata_array arr = {0, MAX_ENTRIES, md};
    int expect = tlen == 0, decided = tlen == 0;
    while (arr.count < MAX_ENTRIES && size - at >= 3) {
        int kind = data[at] % 5, near = data[at + 1] & 1;
        size_t vlen = data[at + 2];
        at += 3;
        uint8_t *v = values[arr.count];
        if (near) {
            if (size - at < 2)
                break;
            memcpy(v, bearer, blen);
            v[data[at] % blen] ^= data[at + 1];
            vlen = blen;
            at += 2;
        } else {
            if (size - at < vlen)
                break;
            memcpy(v, data + at, vlen);
            at += vlen;
        }
        md[arr.count].key = grpc_slice_from_static_string(keys[kind]);
        md[arr.count].value = grpc_slice_from_copied_buffer((const char *)v, vlen);
        arr.count++;
        if (!decided && kind == 0) {
            expect = vlen == blen && memcmp(v, bearer, blen) == 0;
            decided = 1;
        }
    }

    ds_rpc_security_opts o = {0};
    o.token = token;
    o.what = "fuzz";
    ds_error err;
    ds_rpc_security *s = ds_rpc_security_new(&o, &err);
    if (!s)
        abort();
    char identity[64], why[128];
    why[0] = '\0';
    int ok = ds_rpc_authenticate(s, NULL, &arr, identity, sizeof identity, why, sizeof why) == 0;
    if (ok != expect)
        abort();
    if (ok && strcmp(identity, tlen ? "token" : ""))
        abort();
    if (!ok && (identity[0] || !why[0]))
        abort();
    ds_rpc_security_free(s);
    for (size_t i = 0; i < arr.count; i++)
        grpc_slice_unref(md[i].value);
    return 0;
}

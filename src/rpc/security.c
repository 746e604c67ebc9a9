/* security.c - TLS credentials and the shared token (rpc.h, "security").
 *
 * The token travels as "authorization: Bearer <token>" call metadata, the
 * way gRPC deployments carry bearer credentials; servers compare it in
 * constant time so that response timing says nothing about a guess. */
#include "rpc/security.h"

#include <grpc/grpc_security_constants.h>
#include <grpc/slice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"

#define MAX_PEM_BYTES ((uint64_t)1 << 20) /* a certificate chain is a few kB */
#define AUTH_KEY "authorization"
#define BEARER "Bearer "

struct ds_rpc_security {
    char *ca, *cert, *key; /* PEM text; NULL when absent */
    char *token;           /* NULL when none */
    char *bearer;          /* "Bearer <token>" */
    grpc_metadata md;
};

static int read_pem(const char *what, const char *key, const char *path, char **out, ds_error *err)
{
    if (!path)
        return 0;
    ds_buf b = {0};
    if (ds_read_file(path, MAX_PEM_BYTES, &b, err))
        return ds_error_prefix(err, "%s: %s", what, key);
    *out = malloc(b.len + 1);
    if (!*out) {
        ds_buf_free(&b);
        return ds_errorf(err, "%s: out of memory", what);
    }
    memcpy(*out, b.data, b.len);
    (*out)[b.len] = '\0';
    ds_buf_free(&b);
    if (!strstr(*out, "-----BEGIN "))
        return ds_errorf(err, "%s: %s: %s is not a PEM file (no -----BEGIN line)", what, key, path);
    return 0;
}

ds_rpc_security *ds_rpc_security_new(const ds_rpc_security_opts *o, ds_error *err)
{
    const char *what = o->what ? o->what : "security";
    if (!o->cert_file != !o->key_file) {
        ds_errorf(err, "%s: tls.cert and tls.key go together (got only %s)", what,
                  o->cert_file ? "cert" : "key");
        return NULL;
    }
    if ((o->cert_file || o->key_file) && !o->ca_file) {
        ds_errorf(err, "%s: tls.ca is missing (the CA that signed every role's certificate)",
                  what);
        return NULL;
    }
    ds_rpc_security *s = calloc(1, sizeof *s);
    if (!s) {
        ds_errorf(err, "%s: out of memory", what);
        return NULL;
    }
    if (read_pem(what, "tls.ca", o->ca_file, &s->ca, err) ||
        read_pem(what, "tls.cert", o->cert_file, &s->cert, err) ||
        read_pem(what, "tls.key", o->key_file, &s->key, err))
        goto fail;
    if (o->token && *o->token) {
        size_t n = strlen(o->token);
        s->token = strdup(o->token);
        s->bearer = malloc(sizeof BEARER + n);
        if (!s->token || !s->bearer) {
            ds_errorf(err, "%s: out of memory", what);
            goto fail;
        }
        memcpy(s->bearer, BEARER, sizeof BEARER - 1);
        memcpy(s->bearer + sizeof BEARER - 1, o->token, n + 1);
        s->md.key = grpc_slice_from_static_string(AUTH_KEY);
        s->md.value = grpc_slice_from_static_string(s->bearer);
    }
    return s;
fail:
    ds_rpc_security_free(s);
    return NULL;
}

void ds_rpc_security_free(ds_rpc_security *s)
{
    if (!s)
        return;
    free(s->ca);
    free(s->cert);
    if (s->key) /* a private key: do not leave it in freed memory */
        memset(s->key, 0, strlen(s->key));
    free(s->key);
    if (s->token) {
        memset(s->token, 0, strlen(s->token));
        memset(s->bearer, 0, strlen(s->bearer));
    }
    free(s->token);
    free(s->bearer);
    free(s);
}

const char *ds_rpc_security_mode(const ds_rpc_security *s)
{
    if (s && s->ca)
        return s->token ? "TLS + token" : "mutual TLS";
    return s && s->token ? "plaintext + token" : "plaintext";
}

grpc_server_credentials *ds_rpc_server_creds(const ds_rpc_security *s)
{
    if (s && s->ca && !s->cert)
        return NULL; /* TLS without a certificate to serve with */
    if (!s || !s->cert)
        return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {s->key, s->cert};
    /* With a token, the token authenticates clients (they may hold only the
     * CA); without one, their certificate must. */
    return grpc_ssl_server_credentials_create_ex(
        s->ca, &pair, 1,
        s->token ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                 : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
        NULL);
}

grpc_channel_credentials *ds_rpc_channel_creds(const ds_rpc_security *s)
{
    if (!s || !s->ca)
        return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {s->key, s->cert};
    return grpc_ssl_credentials_create(s->ca, s->cert ? &pair : NULL, NULL, NULL);
}

grpc_metadata *ds_rpc_call_metadata(const ds_rpc_security *s, size_t *n)
{
    *n = s && s->token ? 1 : 0;
    return *n ? (grpc_metadata *)&s->md : NULL;
}

/* Equal strings, in time that depends only on the expected one's length. */
static int same_secret(const char *expected, const uint8_t *got, size_t got_len)
{
    size_t n = strlen(expected);
    unsigned diff = got_len != n;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(uint8_t)expected[i] ^ (i < got_len ? got[i] : 0u);
    return diff == 0;
}

static void common_name(grpc_call *call, char *out, size_t len)
{
    out[0] = '\0';
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx)
        return;
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (p)
        snprintf(out, len, "cn=%.*s", (int)(p->value_length > 200 ? 200 : p->value_length),
                 p->value);
    grpc_auth_context_release(ctx);
}

int ds_rpc_authenticate(const ds_rpc_security *s, grpc_call *call, const grpc_metadata_array *md,
                        char *identity, size_t identity_len, char *why, size_t why_len)
{
    identity[0] = '\0';
    if (s && s->token) {
        const grpc_metadata *found = NULL;
        for (size_t i = 0; i < md->count && !found; i++)
            if (grpc_slice_str_cmp(md->metadata[i].key, AUTH_KEY) == 0)
                found = &md->metadata[i];
        if (!found) {
            snprintf(why, why_len, "no auth token (set auth.token or DELTASLICE_TOKEN)");
            return -1;
        }
        if (!same_secret(s->bearer, GRPC_SLICE_START_PTR(found->value),
                         GRPC_SLICE_LENGTH(found->value))) {
            snprintf(why, why_len, "wrong auth token");
            return -1;
        }
        snprintf(identity, identity_len, "token");
        return 0;
    }
    if (s && s->cert) /* the handshake verified it; the name is the identity */
        common_name(call, identity, identity_len);
    return 0;
}

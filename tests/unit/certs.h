/* certs.h - test certificates, made with the openssl command (tests that
 * include this need it on PATH).  ds_test_make_certs(dir) writes NAME.pem
 * and NAME.key for:
 *   ca, other-ca         two CAs: ours and a stranger's
 *   master, w0, intruder signed by ca, common name = NAME, SAN localhost
 *                        and 127.0.0.1
 *   stranger             signed by other-ca, common name "w0" (our name,
 *                        their CA)
 *   w1-elsewhere         signed by ca, common name "w1", SAN only
 *                        elsewhere.invalid (names no host we dial)
 * and not-pem.txt, a file that is not PEM.  openssl's output goes to
 * dir/openssl.log.  Call before gRPC starts (system() forks). */
#ifndef DS_TEST_CERTS_H
#define DS_TEST_CERTS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static inline int ds_test_sh(const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Runs a shell command in dir, its output appended to dir/openssl.log. */
static inline int ds_test_sh(const char *dir, const char *fmt, ...)
{
    char cmd[1024], full[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd '%s' && { %s; } >>openssl.log 2>&1", dir, cmd);
    int rc = system(full);
    if (rc)
        fprintf(stderr, "failed (see %s/openssl.log): %s\n", dir, cmd);
    return rc;
}

static inline int ds_test_make_ca(const char *dir, const char *name)
{
    return ds_test_sh(dir,
                      "openssl req -x509 -config ssl.cnf -extensions ca -newkey ec -pkeyopt "
                      "ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.pem -days 2 "
                      "-subj /CN=%s",
                      name, name, name);
}

/* name.pem/name.key for common name cn, signed by ca, with the extensions
 * of section ext. */
static inline int ds_test_make_leaf(const char *dir, const char *name, const char *cn,
                                    const char *ca, const char *ext, int serial)
{
    return ds_test_sh(dir,
                      "openssl req -new -config ssl.cnf -newkey ec -pkeyopt "
                      "ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr -subj /CN=%s",
                      name, name, cn) ||
           ds_test_sh(dir,
                      "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial %d "
                      "-days 2 -extfile ssl.cnf -extensions %s -out %s.pem",
                      name, ca, ca, serial, ext, name);
}

static inline int ds_test_make_certs(const char *dir)
{
    static const char cnf[] =
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
        "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "[leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "[elsewhere]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:elsewhere.invalid\n";
    char path[512];
    snprintf(path, sizeof path, "%s/ssl.cnf", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(cnf, f);
    if (fclose(f))
        return -1;
    return ds_test_make_ca(dir, "ca") || ds_test_make_ca(dir, "other-ca") ||
           ds_test_make_leaf(dir, "master", "master", "ca", "leaf", 1) ||
           ds_test_make_leaf(dir, "w0", "w0", "ca", "leaf", 2) ||
           ds_test_make_leaf(dir, "intruder", "intruder", "ca", "leaf", 3) ||
           ds_test_make_leaf(dir, "stranger", "w0", "other-ca", "leaf", 4) ||
           ds_test_make_leaf(dir, "w1-elsewhere", "w1", "ca", "elsewhere", 5) ||
           ds_test_sh(dir, "printf 'just some text\\n' > not-pem.txt")
               ? -1
               : 0;
}

#endif

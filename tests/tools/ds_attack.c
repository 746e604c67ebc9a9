/* tests/tools/ds_attack.c - a hostile client for tests/e2e/security.sh.
 *
 * Issue 13's attacks were found with a 60-line hand-written gRPC client;
 * this is that client on the project's own rpc layer, so the e2e test can
 * make each attack against a running chain and check what comes back.  Each
 * subcommand makes one call (flood: one burst of raw TCP connections) and
 * prints one line:
 *
 *   COMMAND STATUS: detail
 *   results ALREADY_EXISTS: target (localhost:33330) Results: ALREADY_EXISTS: w0 serves ...
 *
 * STATUS is the gRPC status name (OK, UNAVAILABLE, ...); flood has no call,
 * its STATUS is OK when every connection opened, FAILED otherwise.  Exit 0
 * once the attack was made, whatever the status; 1 when it could not be made
 * (unreadable credentials, no sockets); 2 on usage errors.  A call whose
 * connection attempt timed out (a badly loaded machine: each attempt gets
 * 5 s) is made again within --deadline, and the line says so.
 *
 *   ds_attack COMMAND --target HOST:PORT [--ca F] [--cert F --key F]
 *             [--token T] [--deadline S] [command options]
 *     ping [--trainer]          Worker/Clock (Trainer/Clock)
 *     results [--takeover] [--session N] [--epoch E] [--hold S]
 *     submit --frame N [--workers W] [--session N] [--epoch E]
 *     costs --hash H --size RxC
 *     predictors --hash H --size RxC [--video NAME] [--frames N]
 *     flood --count N --sources K [--hold S]
 *
 * Credentials: none = plaintext; --ca alone = TLS without a client
 * certificate; --token adds "authorization: Bearer T" to every call.
 * Sessions are random unless given (the attacker does not know the real
 * one). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "rpc/rpc.h"

#define MAX_SOURCES 250 /* 127.0.0.2 .. 127.0.0.251 */
#define MAX_FLOOD 100000

typedef struct opts {
    const char *cmd, *target;
    ds_rpc_security_opts sec;
    double deadline_s, hold_s;
    int trainer, takeover;
    uint64_t session, frame;
    uint32_t epoch, workers, frames;
    const char *hash, *video;
    int rows, cols;
    long count, sources;
    int have_frame;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ds_attack COMMAND --target HOST:PORT [--ca F] [--cert F --key F] [--token T]\n"
            "                 [--deadline S] [command options]\n"
            "  ping [--trainer]                 one Clock call to the worker (trainer)\n"
            "  results [--takeover] [--session N] [--epoch E] [--hold S]\n"
            "                                   opens Worker/Results, reads it for S s (1)\n"
            "  submit --frame N [--workers W] [--session N] [--epoch E]\n"
            "                                   a FrameRequest with W (2) empty jobs\n"
            "  costs --hash H --size RxC        Worker/Costs\n"
            "  predictors --hash H --size RxC [--video NAME] [--frames N]\n"
            "                                   Trainer/Predictors\n"
            "  flood --count N --sources K [--hold S]\n"
            "                                   N raw TCP connections from 127.0.0.2.., held\n"
            "                                   S s (1) once all are open, then closed\n"
            "Prints 'COMMAND STATUS: detail'; exit 0 once the attack was made, 1 when it\n"
            "could not be, 2 on usage errors.  Sessions are random unless given.\n");
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "ds_attack: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

/* Strict unsigned number (decimal or 0x hex) within max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v <= 3600))
        return -1;
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    enum { O_CA = 256, O_CERT, O_KEY, O_TOKEN, O_DEADLINE, O_HOLD, O_TRAINER, O_TAKEOVER,
           O_SESSION, O_EPOCH, O_FRAME, O_WORKERS, O_HASH, O_SIZE, O_VIDEO, O_FRAMES, O_COUNT,
           O_SOURCES };
    static const struct option lo[] = {
        {"target", required_argument, 0, 't'},  {"ca", required_argument, 0, O_CA},
        {"cert", required_argument, 0, O_CERT}, {"key", required_argument, 0, O_KEY},
        {"token", required_argument, 0, O_TOKEN}, {"deadline", required_argument, 0, O_DEADLINE},
        {"hold", required_argument, 0, O_HOLD}, {"trainer", no_argument, 0, O_TRAINER},
        {"takeover", no_argument, 0, O_TAKEOVER}, {"session", required_argument, 0, O_SESSION},
        {"epoch", required_argument, 0, O_EPOCH}, {"frame", required_argument, 0, O_FRAME},
        {"workers", required_argument, 0, O_WORKERS}, {"hash", required_argument, 0, O_HASH},
        {"size", required_argument, 0, O_SIZE}, {"video", required_argument, 0, O_VIDEO},
        {"frames", required_argument, 0, O_FRAMES}, {"count", required_argument, 0, O_COUNT},
        {"sources", required_argument, 0, O_SOURCES}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *o = (opts){.deadline_s = 10, .hold_s = 1, .epoch = 1, .workers = 2};
    o->sec.what = "ds_attack credentials";
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            usage(stdout);
            exit(0);
        }
        return bad_usage("%s", "no command");
    }
    o->cmd = argv[1];
    optind = 2;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
        switch (c) {
        case 't': o->target = optarg; break;
        case O_CA: o->sec.ca_file = optarg; break;
        case O_CERT: o->sec.cert_file = optarg; break;
        case O_KEY: o->sec.key_file = optarg; break;
        case O_TOKEN: o->sec.token = optarg; break;
        case O_DEADLINE:
            if (parse_seconds(optarg, &o->deadline_s) || o->deadline_s <= 0)
                return bad_usage("--deadline wants seconds in (0, 3600], got '%s'", optarg);
            break;
        case O_HOLD:
            if (parse_seconds(optarg, &o->hold_s))
                return bad_usage("--hold wants seconds in [0, 3600], got '%s'", optarg);
            break;
        case O_TRAINER: o->trainer = 1; break;
        case O_TAKEOVER: o->takeover = 1; break;
        case O_SESSION:
            if (parse_u64(optarg, UINT64_MAX, &o->session) || !o->session)
                return bad_usage("--session wants a non-zero number, got '%s'", optarg);
            break;
        case O_EPOCH:
            if (parse_u64(optarg, UINT32_MAX, &v))
                return bad_usage("--epoch wants a 32-bit number, got '%s'", optarg);
            o->epoch = (uint32_t)v;
            break;
        case O_FRAME:
            if (parse_u64(optarg, UINT64_MAX, &o->frame))
                return bad_usage("--frame wants a number, got '%s'", optarg);
            o->have_frame = 1;
            break;
        case O_WORKERS:
            if (parse_u64(optarg, DS_RPC_MAX_WORKERS, &v) || !v)
                return bad_usage("--workers wants 1..64, got '%s'", optarg);
            o->workers = (uint32_t)v;
            break;
        case O_HASH: o->hash = optarg; break;
        case O_SIZE:
            if (sscanf(optarg, "%dx%d", &o->rows, &o->cols) != 2 || o->rows < 1 || o->cols < 1)
                return bad_usage("--size wants ROWSxCOLS, got '%s'", optarg);
            break;
        case O_VIDEO: o->video = optarg; break;
        case O_FRAMES:
            if (parse_u64(optarg, UINT32_MAX, &v))
                return bad_usage("--frames wants a number, got '%s'", optarg);
            o->frames = (uint32_t)v;
            break;
        case O_COUNT:
            if (parse_u64(optarg, MAX_FLOOD, &v) || !v)
                return bad_usage("--count wants 1..100000, got '%s'", optarg);
            o->count = (long)v;
            break;
        case O_SOURCES:
            if (parse_u64(optarg, MAX_SOURCES, &v) || !v)
                return bad_usage("--sources wants 1..250, got '%s'", optarg);
            o->sources = (long)v;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if (!o->target)
        return bad_usage("%s", "--target HOST:PORT is required");
    const char *cmd = o->cmd;
    if (!strcmp(cmd, "submit") && !o->have_frame)
        return bad_usage("%s", "submit needs --frame N");
    if ((!strcmp(cmd, "costs") || !strcmp(cmd, "predictors")) && (!o->hash || !o->rows))
        return bad_usage("%s needs --hash H and --size RxC", cmd);
    if (!strcmp(cmd, "flood") && (!o->count || !o->sources))
        return bad_usage("%s", "flood needs --count N and --sources K");
    if (strcmp(cmd, "ping") && strcmp(cmd, "results") && strcmp(cmd, "submit") &&
        strcmp(cmd, "costs") && strcmp(cmd, "predictors") && strcmp(cmd, "flood"))
        return bad_usage("unknown command '%s'", cmd);
    return 0;
}

/* The line the test reads. */
static int report(const opts *o, int code, const char *detail, const char *note)
{
    printf("%s %s: %s%s\n", o->cmd, ds_rpc_code_name(code), detail, note);
    fflush(stdout);
    return 0;
}

static uint64_t random_session(void)
{
    uint64_t s = 0;
    while (!s)
        if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
            s = (uint64_t)ds_wall_us() * 0x9e3779b97f4a7c15ull; /* not secret: any id will do */
    return s;
}

/* ------------------------------------------------------------------ calls */

/* Whether a failed call says nothing about the server's answer: the
 * connection attempt ran out of time before the handshake ended (rpc.c
 * gives each attempt 5 s; a loaded machine under a sanitizer or an
 * emulator may still need more).  A refused handshake reads "Socket closed"
 * or "Ssl handshake failed" instead. */
static int slow_connect(int code, const ds_error *err)
{
    return code == DS_RPC_UNAVAILABLE &&
           (strstr(err->msg, "timed out") || strcasestr(err->msg, "handshake read failed") ||
            strcasestr(err->msg, "handshaker shutdown"));
}

/* Before attempt k (1, 2, ...) after a slow connection: waits out gRPC's
 * reconnect backoff (0.1 s doubling); 0 while the deadline leaves time for
 * another attempt. */
static int retry_wait(const opts *o, ds_rpc_channel *ch, int k, double t0)
{
    double wait = 0.1 * (double)(1 << (k < 5 ? k : 5));
    if (ds_now() + wait >= t0 + o->deadline_s)
        return -1;
    ds_rpc_wait_ready(ch, wait, NULL); /* READY early: the next call goes at once */
    return 0;
}

/* The note a report gets when connections timed out first. */
static const char *retried_note(int attempts, char *buf, size_t len)
{
    if (attempts <= 1)
        return "";
    snprintf(buf, len, " (after %d connection attempts that timed out)", attempts - 1);
    return buf;
}

/* One unary call with a packed message, tried again while connections
 * time out; on OK, the reply unpacked as desc (NULL with a report on any
 * failure). */
static ProtobufCMessage *unary(const opts *o, ds_rpc_channel *ch, const char *method,
                               const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                               int *attempts)
{
    ds_buf q = {0}, r = {0};
    ds_error err = {{0}};
    int code = DS_RPC_INTERNAL;
    ProtobufCMessage *m = NULL;
    double t0 = ds_now();
    *attempts = 0;
    if (ds_rpc_pack(req, &q, &err) == 0) {
        int rc;
        do {
            ++*attempts;
            double left = t0 + o->deadline_s - ds_now();
            rc = ds_rpc_call_unary(ch, method, q.data, q.len, left > 0.01 ? left : 0.01, &r,
                                   &code, &err);
        } while (rc && slow_connect(code, &err) && retry_wait(o, ch, *attempts, t0) == 0);
        if (rc == 0 && !(m = ds_rpc_unpack(desc, r.data, r.len, 0, &err)))
            code = DS_RPC_INTERNAL;
    }
    if (!m) {
        char note[80];
        report(o, code, err.msg, retried_note(*attempts, note, sizeof note));
    }
    ds_buf_free(&q);
    ds_buf_free(&r);
    return m;
}

static int do_ping(const opts *o, ds_rpc_channel *ch)
{
    Deltaslice__ClockProbe p = DELTASLICE__CLOCK_PROBE__INIT;
    p.client_send_us = ds_wall_us();
    int attempts;
    ProtobufCMessage *m = unary(o, ch, o->trainer ? DS_RPC_TRAINER_CLOCK : DS_RPC_WORKER_CLOCK,
                                &p.base, &deltaslice__clock_probe__descriptor, &attempts);
    if (!m)
        return 0;
    protobuf_c_message_free_unpacked(m, NULL);
    char note[80];
    return report(o, DS_RPC_OK, o->trainer ? "the trainer's clock answered" : "the worker's clock answered",
                  retried_note(attempts, note, sizeof note));
}

/* Opens the master's result stream as if it were the master; when that
 * works, reads what the real master should have got. */
static int do_results(const opts *o, ds_rpc_channel *ch)
{
    ds_rpc_results_request q = {o->session ? o->session : random_session(), o->epoch,
                                o->takeover};
    ds_error err = {{0}};
    int code = DS_RPC_INTERNAL, attempts = 0;
    double t0 = ds_now();
    ds_rpc_reader *r;
    do
        attempts++;
    while (!(r = ds_rpc_open_results(ch, &q, &code, &err)) && slow_connect(code, &err) &&
           retry_wait(o, ch, attempts, t0) == 0);
    char buf[80];
    const char *note = retried_note(attempts, buf, sizeof buf);
    if (!r)
        return report(o, code, err.msg, note);
    ds_buf msg = {0};
    long n = 0;
    int end = DS_RPC_TIMEOUT;
    double stop = ds_now() + o->hold_s;
    for (double left; (left = stop - ds_now()) > 0;) {
        end = ds_rpc_reader_next(r, &msg, left, &code, &err);
        if (end != 1)
            break;
        n++;
    }
    char detail[DS_ERROR_MAX + 128];
    snprintf(detail, sizeof detail, "stream of session %016" PRIx64 " opened; %ld reports in %.1f s%s%s",
             q.session_id, n, o->hold_s,
             end == 0 ? "; then ended" : end == -1 ? "; then: " : "", end == -1 ? err.msg : "");
    ds_buf_free(&msg);
    ds_rpc_reader_free(r);
    return report(o, DS_RPC_OK, detail, note);
}

/* A frame far ahead of any real one, for no worker's work: accepted, it
 * would make every later real frame "out of order". */
static int do_submit(const opts *o, ds_rpc_channel *ch)
{
    Deltaslice__Job *jobs = calloc(o->workers, sizeof *jobs);
    Deltaslice__Job **jp = calloc(o->workers, sizeof *jp);
    if (!jobs || !jp) {
        free(jobs);
        free(jp);
        fprintf(stderr, "ds_attack: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < o->workers; i++) {
        deltaslice__job__init(&jobs[i]);
        jp[i] = &jobs[i];
    }
    Deltaslice__FrameRequest f = DELTASLICE__FRAME_REQUEST__INIT;
    f.frame_id = o->frame;
    f.n_jobs = o->workers;
    f.jobs = jp;
    f.session_id = o->session ? o->session : random_session();
    f.epoch = o->epoch;
    f.master_send_us = ds_wall_us();
    int attempts;
    ProtobufCMessage *m = unary(o, ch, DS_RPC_WORKER_SUBMIT, &f.base, &deltaslice__ack__descriptor,
                                &attempts);
    free(jobs);
    free(jp);
    if (!m)
        return 0;
    const Deltaslice__Ack *a = (const Deltaslice__Ack *)m;
    char detail[DS_ERROR_MAX + 128], note[80];
    snprintf(detail, sizeof detail, "frame %" PRIu64 " of session %016" PRIx64 " %s%s",
             o->frame, f.session_id, a->ok ? "queued" : "refused in the ack: ",
             a->ok ? "" : (a->error ? a->error : ""));
    protobuf_c_message_free_unpacked(m, NULL);
    return report(o, DS_RPC_OK, detail, retried_note(attempts, note, sizeof note));
}

static int do_costs(const opts *o, ds_rpc_channel *ch)
{
    Deltaslice__LayerCostsRequest q = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    q.model_hash = (char *)o->hash;
    q.rows = (uint32_t)o->rows;
    q.cols = (uint32_t)o->cols;
    int attempts;
    ProtobufCMessage *m = unary(o, ch, DS_RPC_WORKER_COSTS, &q.base,
                                &deltaslice__layer_costs__descriptor, &attempts);
    if (!m)
        return 0;
    const Deltaslice__LayerCosts *c = (const Deltaslice__LayerCosts *)m;
    char detail[DS_RPC_MAX_TEXT + 128], note[80];
    snprintf(detail, sizeof detail, "costs of %zu layers at %dx%d (host %.200s, %u threads)",
             c->n_seconds, o->rows, o->cols, c->host ? c->host : "", c->threads);
    protobuf_c_message_free_unpacked(m, NULL);
    return report(o, DS_RPC_OK, detail, retried_note(attempts, note, sizeof note));
}

static int do_predictors(const opts *o, ds_rpc_channel *ch)
{
    Deltaslice__PredictorsRequest q = DELTASLICE__PREDICTORS_REQUEST__INIT;
    q.model_hash = (char *)o->hash;
    q.video = (char *)(o->video ? o->video : "");
    q.rows = (uint32_t)o->rows;
    q.cols = (uint32_t)o->cols;
    q.frame_num = o->frames;
    int attempts;
    ProtobufCMessage *m = unary(o, ch, DS_RPC_TRAINER_PREDICTORS, &q.base,
                                &deltaslice__predictors__descriptor, &attempts);
    if (!m)
        return 0;
    char detail[128], note[80];
    snprintf(detail, sizeof detail, "predictors for %dx%d (%zu bytes)", o->rows, o->cols,
             ((const Deltaslice__Predictors *)m)->blob.len);
    protobuf_c_message_free_unpacked(m, NULL);
    return report(o, DS_RPC_OK, detail, retried_note(attempts, note, sizeof note));
}

/* ------------------------------------------------------------------ flood */

/* The target's IPv4 address (the sources are 127.0.0.x). */
static int resolve_v4(const char *target, struct sockaddr_in *sa, ds_error *err)
{
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || (size_t)(colon - target) >= sizeof host)
        return ds_errorf(err, "target '%s' is not HOST:PORT", target);
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = '\0';
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc)
        return ds_errorf(err, "target %s: %s (flood needs an IPv4 address)", target,
                         gai_strerror(rc));
    memcpy(sa, res->ai_addr, sizeof *sa);
    freeaddrinfo(res);
    return 0;
}

/* Enough descriptors of our own for n sockets. */
static int raise_fd_limit(long n, ds_error *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return ds_errorf(err, "getrlimit: %s", strerror(errno));
    rlim_t want = (rlim_t)n + 32;
    if (rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        return ds_errorf(err, "%ld connections need %lu descriptors; ulimit -Hn is %lu", n,
                         (unsigned long)want, (unsigned long)rl.rlim_max);
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl) ? ds_errorf(err, "setrlimit: %s", strerror(errno)) : 0;
}

/* Opens count connections, source i % sources + 2 in 127.0.0.0/8, each
 * connect bounded by the deadline; holds them, then closes them all. */
static int do_flood(const opts *o)
{
    ds_error err = {{0}};
    struct sockaddr_in to;
    if (resolve_v4(o->target, &to, &err) || raise_fd_limit(o->count, &err)) {
        fprintf(stderr, "ds_attack: flood: %s\n", err.msg);
        return 1;
    }
    int *fds = malloc(sizeof *fds * (size_t)o->count);
    if (!fds) {
        fprintf(stderr, "ds_attack: out of memory\n");
        return 1;
    }
    long opened = 0, failed = 0;
    char first[300] = "";
    struct timeval tv = {(time_t)o->deadline_s,
                         (suseconds_t)((o->deadline_s - (double)(time_t)o->deadline_s) * 1e6)};
    for (long i = 0; i < o->count; i++) {
        struct sockaddr_in from = {.sin_family = AF_INET};
        from.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(2 + i % o->sources));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const char *step = "socket";
        if (fd >= 0) {
            /* SO_SNDTIMEO bounds a blocking connect on Linux. */
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            step = bind(fd, (struct sockaddr *)&from, sizeof from)             ? "bind"
                   : connect(fd, (struct sockaddr *)&to, sizeof to)            ? "connect"
                                                                               : NULL;
        }
        if (!step) {
            fds[opened++] = fd;
            continue;
        }
        if (!failed++) {
            char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
            snprintf(first, sizeof first, "%s %s -> %s:%u: %s", step,
                     inet_ntop(AF_INET, &from.sin_addr, a, sizeof a),
                     inet_ntop(AF_INET, &to.sin_addr, b, sizeof b), ntohs(to.sin_port),
                     strerror(errno));
        }
        if (fd >= 0)
            close(fd);
    }
    struct timespec hold = {(time_t)o->hold_s,
                            (long)((o->hold_s - (double)(time_t)o->hold_s) * 1e9)};
    while (nanosleep(&hold, &hold) && errno == EINTR)
        ;
    for (long i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    char detail[512];
    if (failed)
        snprintf(detail, sizeof detail, "%ld of %ld connections failed (first: %s); %ld held %.1f s, "
                 "then closed", failed, o->count, first, opened, o->hold_s);
    else
        snprintf(detail, sizeof detail, "%ld connections from %ld sources (127.0.0.2..127.0.0.%ld) "
                 "held %.1f s, then closed", opened, o->sources, o->sources + 1, o->hold_s);
    printf("flood %s: %s\n", failed ? "FAILED" : "OK", detail);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc;
    ds_log_init("attack", getenv("DS_DEBUG") ? DS_LOG_DEBUG : DS_LOG_ERROR);
    if (!strcmp(o.cmd, "flood"))
        return do_flood(&o);
    ds_error err = {{0}};
    ds_rpc_security *sec = NULL;
    if (o.sec.ca_file || o.sec.cert_file || o.sec.key_file || o.sec.token) {
        if (!(sec = ds_rpc_security_new(&o.sec, &err))) {
            fprintf(stderr, "ds_attack: %s\n", err.msg);
            return 1;
        }
    }
    ds_rpc_channel *ch = ds_rpc_channel_new("target", o.target, 0, sec, &err);
    if (!ch) {
        fprintf(stderr, "ds_attack: %s\n", err.msg);
        ds_rpc_security_free(sec);
        return 1;
    }
    if (!strcmp(o.cmd, "ping"))
        rc = do_ping(&o, ch);
    else if (!strcmp(o.cmd, "results"))
        rc = do_results(&o, ch);
    else if (!strcmp(o.cmd, "submit"))
        rc = do_submit(&o, ch);
    else if (!strcmp(o.cmd, "costs"))
        rc = do_costs(&o, ch);
    else
        rc = do_predictors(&o, ch);
    ds_rpc_channel_free(ch);
    ds_rpc_security_free(sec);
    return rc;
}

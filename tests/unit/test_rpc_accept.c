/* test_rpc_accept.c - a server keeps accepting after the process ran out of
 * file descriptors, and limits the connections one address holds (the
 * accept4 guard, src/rpc/accept.c), with raw TCP connections on loopback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "rpc/rpc.h"

#define WAIT_MS 5000 /* generous: loopback answers take microseconds */

static struct rlimit saved_nofile;

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static ds_rpc_server *start_server(void)
{
    ds_error err = {{0}};
    ds_rpc_server *srv = ds_rpc_server_new("127.0.0.1:0", 0, NULL, &err);
    assert_non_null(srv);
    assert_int_equal(ds_rpc_server_add_unary(srv, DS_RPC_WORKER_CLOCK, ds_rpc_clock_handler, NULL,
                                             &err), 0);
    assert_int_equal(ds_rpc_server_start(srv, 1, &err), 0);
    return srv;
}

/* A raw TCP connection to 127.0.0.1:port from source address src (NULL:
 * any); -1 with errno when socket or connect fails. */
static int dial(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (src) {
        inet_pton(AF_INET, src, &a.sin_addr);
        if (bind(fd, (struct sockaddr *)&a, sizeof a))
            goto fail;
    }
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a))
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

enum answer { SILENT, SERVED, ENDED };

/* What the server did with a connection: SERVED once bytes (its HTTP/2
 * SETTINGS) arrive, ENDED when it closed it, SILENT when nothing came
 * within WAIT_MS (a connection left in the backlog). */
static enum answer answer_of(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, WAIT_MS) != 1)
        return SILENT;
    char b[256];
    ssize_t n = read(fd, b, sizeof b);
    if (n > 0)
        return SERVED;
    return n == 0 || errno == ECONNRESET ? ENDED : SILENT;
}

/* Reads exactly len bytes (waiting up to WAIT_MS for each part); 0 on
 * success, -1 on end, error or silence. */
static int read_exact(int fd, uint8_t *b, size_t len)
{
    for (size_t got = 0; got < len;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, WAIT_MS) != 1)
            return -1;
        ssize_t n = read(fd, b + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* The value of setting id in the server's HTTP/2 preface (its first frame,
 * SETTINGS: 9-byte header, then 6-byte id/value entries); -1 when absent,
 * -2 when no SETTINGS frame came. */
static long preface_setting(int fd, unsigned id)
{
    uint8_t h[9], e[6];
    if (read_exact(fd, h, sizeof h) || h[3] != 0x4)
        return -2;
    size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
    long v = -1;
    for (; len >= sizeof e; len -= sizeof e) {
        if (read_exact(fd, e, sizeof e))
            return -2;
        if ((unsigned)(e[0] << 8 | e[1]) == id)
            v = (long)((uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 8 | e[5]);
    }
    return v;
}

/* The descriptor limit that leaves n_free numbers to open (the kernel
 * hands out the lowest free one; inherited descriptors may sit anywhere). */
static rlim_t limit_leaving(int n_free)
{
    static unsigned char used[4096];
    memset(used, 0, sizeof used);
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) < (int)sizeof used && atoi(e->d_name) != dirfd(d))
            used[atoi(e->d_name)] = 1;
    closedir(d);
    int fd = 0;
    for (; n_free > 0; fd++) {
        assert_true(fd < (int)sizeof used);
        n_free -= !used[fd];
    }
    return (rlim_t)fd;
}

static int restore_nofile(void **state)
{
    (void)state;
    setrlimit(RLIMIT_NOFILE, &saved_nofile);
    return 0;
}

/* ---- tests */

static void test_fd_exhaustion_recovers(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server();
    int port = ds_rpc_server_port(srv);
    int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(spare >= 0);

    struct rlimit low = saved_nofile;
    low.rlim_cur = limit_leaving(40);
    assert_true(low.rlim_cur <= saved_nofile.rlim_max);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

    /* One connection at a time, each answered before the next, until the
     * process is out of descriptors.  A connection takes two here (ours and
     * the server's), so the server's accept may be the first to run out. */
    int fds[64], n = 0;
    for (;;) {
        assert_true(n < 64);
        int fd = dial(port, NULL);
        if (fd < 0) {
            assert_int_equal(errno, EMFILE);
            break;
        }
        fds[n++] = fd;
        answer_of(fd); /* served, or drained when the server's accept ran out */
    }
    assert_true(n >= 10);
    /* Out of descriptors whichever way the count fell: one freed for our
     * socket leaves none for the server's accept. */
    close(spare);
    int last = dial(port, NULL);
    assert_true(last >= 0);
    enum answer last_answer = answer_of(last);
    close(last);
    for (int i = 0; i < n; i++)
        close(fds[i]);

    /* A fresh client is served again, under the same limit. */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("w0", target, 0, NULL, &err);
    assert_non_null(ch);
    int rc = ds_rpc_call_ping(ch, DS_RPC_WORKER_CLOCK, 10, &err);
    if (rc)
        print_message("ping after fd exhaustion: %s\n", err.msg);
    assert_int_equal(rc, 0);
    /* The connection that found no descriptor was closed, not left in the
     * backlog. */
    assert_int_equal(last_answer, ENDED);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_per_peer_limit(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server();
    int port = ds_rpc_server_port(srv);
    enum { N = DS_RPC_MAX_CONN_PER_PEER + 8 };
    int fds[N], served = 0, ended = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = dial(port, NULL);
        assert_true(fds[i] >= 0);
        enum answer a = answer_of(fds[i]);
        served += a == SERVED;
        ended += a == ENDED;
    }
    assert_true(ended >= N - DS_RPC_MAX_CONN_PER_PEER);
    assert_true(served >= 1);
    assert_int_equal(served + ended, N);

    /* Another address is still served: the server's SETTINGS frame comes
     * (with the per-connection stream limit), and the connection stays open
     * after it. */
    int other = dial(port, "127.0.0.2");
    assert_true(other >= 0);
    assert_int_equal(preface_setting(other, 0x3 /* MAX_CONCURRENT_STREAMS */),
                     DS_RPC_MAX_STREAMS_PER_CONN);
    struct pollfd p = {.fd = other, .events = POLLIN};
    if (poll(&p, 1, 200) == 1) {
        char b[64];
        assert_true(read(other, b, sizeof b) > 0);
    }
    close(other);

    /* Closed connections stop counting: once the server has seen ours go,
     * 127.0.0.1 gets in again. */
    for (int i = 0; i < N; i++)
        close(fds[i]);
    enum answer again = ENDED;
    for (int tries = 0; tries < 50 && again != SERVED; tries++) {
        int fd = dial(port, NULL);
        assert_true(fd >= 0);
        again = answer_of(fd);
        close(fd);
        if (again != SERVED)
            sleep_s(0.1);
    }
    assert_int_equal(again, SERVED);
    ds_rpc_server_free(srv);
}

int main(void)
{
    ds_log_init("test", DS_LOG_WARN);
    if (getrlimit(RLIMIT_NOFILE, &saved_nofile))
        return perror("getrlimit"), 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fd_exhaustion_recovers, restore_nofile),
        cmocka_unit_test(test_per_peer_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

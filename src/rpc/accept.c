/* accept.c - gRPC's listeners survive running out of file descriptors, and
 * no peer address holds more than its share of connections.
 *
 * Why this file defines accept4: gRPC 1.51 (Debian 12's libgrpc29),
 * tcp_server_posix.cc on_read, takes any accept4 failure other than
 * EAGAIN/EWOULDBLOCK/ECONNABORTED as the end of the listener.  One EMFILE
 * (a peer opened more connections than the process may have descriptors)
 * and it logs "Failed accept4" and never accepts again: the worker lives
 * on, unreachable, with its clients piling up in CLOSE-WAIT.  libgrpc.so
 * calls accept4 through its PLT, and the dynamic linker binds that call to
 * the first definition in the global scope, the executable's (ELF
 * interposition), ahead of libc's and of a sanitizer's interceptor.  So
 * every program that links the rpc module (rpc_init calls
 * ds_rpc_accept_guard_install, which also pulls this object into the link)
 * answers gRPC's accept4 with the function below, which enters the kernel
 * itself with syscall(SYS_accept4).
 *
 * It acts on non-blocking listeners (gRPC's) once installed; any other
 * accept4 passes straight through, since draining a blocking listener
 * could block. */
#include "rpc/accept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "rpc/rpc.h"

/* The peer's IP address (IPv4-mapped IPv6 counts as IPv4); family 0 for
 * peers without one (unix sockets), which have no per-address limit. */
typedef struct peer_ip {
    int family;
    unsigned char a[16];
} peer_ip;

/* A connection handed out: the socket's inode tells a descriptor gRPC has
 * closed and the kernel reused for another file from the one we counted. */
typedef struct conn {
    int fd;
    ino_t ino;
    peer_ip ip;
} conn;

enum { WARN_PEER, WARN_TOTAL, WARN_RESOURCES, N_WARN };
#define WARN_INTERVAL_S 1.0

static struct {
    pthread_mutex_t mu;
    conn conns[DS_RPC_MAX_CONN];
    int n;
    int reserve; /* /dev/null, given up to drain a connection when out of descriptors */
    double last_warn[N_WARN];
} g = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .reserve = -1,
    .last_warn = {-1e9, -1e9, -1e9},
};

static atomic_int guard_on;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static int sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static int open_reserve(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void install(void)
{
    pthread_mutex_lock(&g.mu);
    g.reserve = open_reserve(); /* if none now, shed() tries again */
    pthread_mutex_unlock(&g.mu);
    atomic_store(&guard_on, 1);
}

void ds_rpc_accept_guard_install(void)
{
    pthread_once(&install_once, install);
}

/* Under g.mu: a warning, unless this reason had one within the last second
 * (an attack would otherwise flood the log). */
static int warn_due(int reason)
{
    double now = ds_now();
    if (now - g.last_warn[reason] < WARN_INTERVAL_S)
        return 0;
    g.last_warn[reason] = now;
    return 1;
}

static peer_ip ip_of(const struct sockaddr_storage *ss)
{
    peer_ip p = {0};
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        p.family = AF_INET;
        memcpy(p.a, &in->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            p.family = AF_INET;
            memcpy(p.a, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            p.family = AF_INET6;
            memcpy(p.a, &in6->sin6_addr, 16);
        }
    }
    return p;
}

static int same_ip(const peer_ip *x, const peer_ip *y)
{
    return x->family == y->family && !memcmp(x->a, y->a, sizeof x->a);
}

/* Under g.mu: drops the connections whose descriptor is closed or now
 * names another file. */
static void prune(void)
{
    int k = 0;
    for (int i = 0; i < g.n; i++) {
        struct stat st;
        if (fstat(g.conns[i].fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == g.conns[i].ino)
            g.conns[k++] = g.conns[i];
    }
    g.n = k;
}

/* Under g.mu: connections counted from ip (0 for a peer without one). */
static int count_from(const peer_ip *ip)
{
    int n = 0;
    for (int i = 0; ip->family && i < g.n; i++)
        n += same_ip(&g.conns[i].ip, ip);
    return n;
}

/* Counts the new connection fd from ip in, or says no: 1 = hand it to
 * gRPC, 0 = close it. */
static int admit(int fd, const peer_ip *ip)
{
    pthread_mutex_lock(&g.mu);
    /* An entry under fd's number is stale: fd is the new socket now. */
    for (int i = 0; i < g.n; i++)
        if (g.conns[i].fd == fd) {
            g.conns[i] = g.conns[--g.n];
            break;
        }
    int from = count_from(ip);
    if (from >= DS_RPC_MAX_CONN_PER_PEER || g.n >= DS_RPC_MAX_CONN) {
        prune(); /* counts may include connections gRPC has closed since */
        from = count_from(ip);
    }
    int ok = 0, reason = -1;
    if (from >= DS_RPC_MAX_CONN_PER_PEER)
        reason = WARN_PEER;
    else if (g.n >= DS_RPC_MAX_CONN)
        reason = WARN_TOTAL;
    else {
        struct stat st;
        ok = 1;
        if (fstat(fd, &st) == 0) /* cannot fail on a fresh socket; if it did: not counted */
            g.conns[g.n++] = (conn){fd, st.st_ino, *ip};
    }
    if (reason >= 0 && warn_due(reason)) {
        char addr[INET6_ADDRSTRLEN] = "a local socket";
        if (ip->family)
            inet_ntop(ip->family, ip->a, addr, sizeof addr);
        if (reason == WARN_PEER)
            ds_log_warn("refused a connection from %s: %d open from that address", addr, from);
        else
            ds_log_warn("refused a connection from %s: %d connections open in all", addr, g.n);
    }
    pthread_mutex_unlock(&g.mu);
    return ok;
}

/* accept4 failed with err (out of descriptors or memory): frees the
 * reserve to accept the next pending connection and close it at once, so
 * that its client sees the end instead of waiting in the backlog.
 * 0: one connection drained (more may wait); -1: the backlog is empty or
 * cannot be drained now (no reserve to give up). */
static int shed(int lfd, int err)
{
    pthread_mutex_lock(&g.mu);
    if (g.reserve < 0)
        g.reserve = open_reserve();
    int rc = -1, waiting = 0;
    if (g.reserve >= 0) {
        close(g.reserve);
        int fd = sys_accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        waiting = fd >= 0 || errno != EAGAIN; /* a connection was there, or may be */
        if (fd >= 0) {
            close(fd);
            rc = 0;
        }
        g.reserve = open_reserve(); /* may fail: another thread took the descriptor */
    }
    /* gRPC asks until EAGAIN: an empty backlog says EMFILE too when the
     * last accepted connection took the last descriptor; no news then. */
    if ((waiting || g.reserve < 0) && warn_due(WARN_RESOURCES))
        ds_log_warn("%s: closing new connections until some are freed",
                    err == EMFILE || err == ENFILE ? "out of file descriptors"
                                                   : "out of memory for sockets");
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static int nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* glibc's prototype (under _GNU_SOURCE): addr is a transparent union. */
int accept4(int lfd, __SOCKADDR_ARG addr, socklen_t *restrict addr_len, int flags)
{
    struct sockaddr *out = addr.__sockaddr__;
    if (!atomic_load(&guard_on) || !nonblocking(lfd))
        return sys_accept4(lfd, out, addr_len, flags);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = sys_accept4(lfd, (struct sockaddr *)&ss, &len, flags);
        if (fd < 0) {
            int e = errno;
            if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
                return -1; /* EAGAIN (backlog empty) and the rest: gRPC's business */
            if (shed(lfd, e) == 0)
                continue;
            /* gRPC waits for the next connection on EAGAIN, and keeps listening. */
            errno = EAGAIN;
            return -1;
        }
        peer_ip ip = ip_of(&ss);
        if (!admit(fd, &ip)) {
            close(fd);
            continue;
        }
        if (out && addr_len) {
            memcpy(out, &ss, len < *addr_len ? len : *addr_len);
            *addr_len = len;
        }
        return fd;
    }
}

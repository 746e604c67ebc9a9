/* run.c - every role on this machine as child processes of one command.
 *
 * Start order: trainer (when the scheduler needs it), workers, master.  The
 * run ends with the master; a role that dies first, or Ctrl-C, stops all of
 * them.  No gRPC here: it is not fork-safe, so children exec a fresh binary. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "roles.h"

#define MAX_CHILDREN (DS_MAX_WORKERS + 2)
#define STOP_GRACE_S 10.0

typedef struct child {
    char name[16];
    pid_t pid;
    int status; /* wait status once exited */
    int exited;
} child;

static pid_t spawn(const char *self_exe, const char *config_path, const char *role, int id, child *c,
                   const sigset_t *old_mask)
{
    char id_text[16];
    snprintf(id_text, sizeof id_text, "%d", id);
    /* Under qemu-user without binfmt the kernel cannot exec our own (foreign)
     * binary: DS_EMULATOR names a program that runs it ("emulator BINARY ARGS"). */
    const char *emu = getenv("DS_EMULATOR");
    if (emu && !*emu)
        emu = NULL;
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    const char *argv[9];
    int n = 0;
    if (emu)
        argv[n++] = emu;
    argv[n++] = self_exe;
    argv[n++] = role;
    if (id >= 0) {
        argv[n++] = "-i";
        argv[n++] = id_text;
    }
    if (config_path) {
        argv[n++] = "-c";
        argv[n++] = config_path;
    }
    argv[n] = NULL;
    if (emu)
        execvp(emu, (char *const *)argv);
    else
        execv(self_exe, (char *const *)argv);
    fprintf(stderr, "run: cannot start %s: %s\n", c->name, strerror(errno));
    _exit(127);
}

static void describe_exit(const child *c, char *buf, size_t len)
{
    if (WIFEXITED(c->status))
        snprintf(buf, len, "%s exited with status %d", c->name, WEXITSTATUS(c->status));
    else if (WIFSIGNALED(c->status))
        snprintf(buf, len, "%s was killed by signal %d (%s)", c->name, WTERMSIG(c->status),
                 strsignal(WTERMSIG(c->status)));
    else
        snprintf(buf, len, "%s stopped", c->name);
}

/* Reaps exited children; returns the index of one that exited, or -1. */
static int reap(child *kids, int n)
{
    int status;
    pid_t pid;
    int which = -1;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < n; i++)
            if (kids[i].pid == pid) {
                kids[i].exited = 1;
                kids[i].status = status;
                which = i;
            }
    return which;
}

static int running(const child *kids, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += kids[i].pid > 0 && !kids[i].exited;
    return k;
}

/* SIGTERM to everyone still running, SIGKILL after the grace period. */
static void stop_all(child *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (kids[i].pid > 0 && !kids[i].exited)
            kill(kids[i].pid, SIGTERM);
    double deadline = ds_now() + STOP_GRACE_S;
    while (running(kids, n) && ds_now() < deadline) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        reap(kids, n);
    }
    for (int i = 0; i < n; i++)
        if (kids[i].pid > 0 && !kids[i].exited) {
            ds_log_warn("%s did not stop in %.0f s: killing it", kids[i].name, STOP_GRACE_S);
            kill(kids[i].pid, SIGKILL);
            waitpid(kids[i].pid, &kids[i].status, 0);
            kids[i].exited = 1;
        }
}

int ds_run_main(const ds_config *cfg, const char *config_path, const char *self_exe)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);

    child kids[MAX_CHILDREN];
    memset(kids, 0, sizeof kids);
    int n = 0;
    if (ds_config_needs_trainer(cfg)) {
        snprintf(kids[n].name, sizeof kids[n].name, "trainer");
        kids[n].pid = spawn(self_exe, config_path, "trainer", -1, &kids[n], &old);
        n++;
    }
    for (int i = 0; i < cfg->n_workers; i++) {
        snprintf(kids[n].name, sizeof kids[n].name, "worker%u", (unsigned char)i); /* i < DS_MAX_WORKERS */
        kids[n].pid = spawn(self_exe, config_path, "worker", i, &kids[n], &old);
        n++;
    }
    int master = n;
    snprintf(kids[n].name, sizeof kids[n].name, "master");
    kids[n].pid = spawn(self_exe, config_path, "master", -1, &kids[n], &old);
    n++;
    for (int i = 0; i < n; i++)
        if (kids[i].pid < 0) {
            ds_log_error("cannot start %s: %s", kids[i].name, strerror(errno));
            stop_all(kids, n);
            return 1;
        }
    ds_log_info("started %d processes: %s%d workers and the master", n,
            ds_config_needs_trainer(cfg) ? "the trainer, " : "", cfg->n_workers);

    int status = 1;
    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            ds_log_warn("interrupted: stopping every role");
            stop_all(kids, n);
            status = 130;
            break;
        }
        reap(kids, n);
        if (kids[master].exited) {
            char what[640];
            describe_exit(&kids[master], what, sizeof what);
            status = WIFEXITED(kids[master].status) ? WEXITSTATUS(kids[master].status) : 1;
            if (status)
                ds_log_error("%s", what);
            stop_all(kids, n);
            break;
        }
        int failed = -1;
        for (int i = 0; i < n && failed < 0; i++)
            if (i != master && kids[i].exited)
                failed = i;
        if (failed >= 0) {
            char what[640];
            describe_exit(&kids[failed], what, sizeof what);
            ds_log_error("%s before the master finished: stopping every role", what);
            stop_all(kids, n);
            status = 1;
            break;
        }
    }
    for (int i = 0; i < n; i++)
        if (i != master && kids[i].exited && WIFSIGNALED(kids[i].status) &&
            WTERMSIG(kids[i].status) != SIGTERM && WTERMSIG(kids[i].status) != SIGKILL) {
            char what[640];
            describe_exit(&kids[i], what, sizeof what);
            ds_log_error("%s", what);
        }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return status;
}

/* run.c - every role on this machine as child processes of one command.
 *
 * Start order: trainer (when the scheduler needs it), workers, master.  The
 * run ends with the master and takes its exit status.  A worker or the
 * trainer that exits before is restarted, as the systemd units restart theirs:
 * after 1 s, doubling up to 30 s while it keeps failing, back to 1 s once it
 * stayed up 60 s.  The master re-plans without a lost worker and takes the
 * restarted one back.  Exit status 2 (bad configuration) is not restarted: it
 * would fail the same way.  Ctrl-C or SIGTERM stops every role (status 130); a
 * second one kills them at once.  A run without end (master.ifr_num 0) ends
 * that way normally: the first signal goes to the master alone, which
 * finishes its frames in flight, and the run takes its status.  Roles run
 * in their own process group, so a terminal's Ctrl-C reaches this process
 * only, and die with it (PR_SET_PDEATHSIG).  No gRPC here: it is not
 * fork-safe, so children exec a fresh binary. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "roles.h"

#define MAX_CHILDREN (DS_MAX_WORKERS + 2)
#define STOP_GRACE_S 10.0
#define RESTART_FIRST_S 1.0
#define RESTART_MAX_S 30.0
#define RESTART_RESET_S 60.0 /* up this long: the role counts as healthy again */
#define WAKE_S 1.0           /* the longest wait for a signal */

typedef enum child_state {
    CHILD_RUNNING,
    CHILD_EXITED,     /* reaped, not handled yet */
    CHILD_RESTARTING, /* waits until restart_at */
    CHILD_DONE,       /* exited, not to be restarted */
} child_state;

typedef struct child {
    char name[16];
    const char *role; /* its subcommand */
    int id;           /* worker id; -1 for the trainer and the master */
    pid_t pid;
    child_state state;
    int status;        /* wait status once exited */
    double started;    /* ds_now() at the last start */
    double backoff;    /* wait before the next restart */
    double restart_at; /* ds_now() of the pending restart */
    int restarts;
} child;

typedef struct supervisor {
    child kids[MAX_CHILDREN];
    int n;
    int master; /* the master's index in kids */
    const char *self_exe, *config_path;
    sigset_t signals;  /* SIGINT, SIGTERM, SIGCHLD: blocked, taken by sigtimedwait */
    sigset_t old_mask; /* the caller's mask: restored in children and at the end */
    int endless;       /* master.ifr_num 0: a signal asks the master to drain */
    int draining;      /* ... and it was asked */
} supervisor;

/* "[emulator] self_exe ROLE [-i ID] [-c CONFIG]" into argv (9 slots).  Under
 * qemu-user without binfmt the kernel cannot exec our own (foreign) binary:
 * DS_EMULATOR names a program that runs it.  Returns the program to exec. */
static const char *role_argv(const supervisor *s, const child *c, char id_text[16], const char **argv)
{
    const char *emu = getenv("DS_EMULATOR");
    if (emu && !*emu)
        emu = NULL;
    int n = 0;
    if (emu)
        argv[n++] = emu;
    argv[n++] = s->self_exe;
    argv[n++] = c->role;
    if (c->id >= 0) {
        snprintf(id_text, 16, "%d", c->id);
        argv[n++] = "-i";
        argv[n++] = id_text;
    }
    if (s->config_path) {
        argv[n++] = "-c";
        argv[n++] = s->config_path;
    }
    argv[n] = NULL;
    return emu ? emu : s->self_exe;
}

static int start_child(supervisor *s, child *c)
{
    char id_text[16];
    const char *argv[9];
    const char *program = role_argv(s, c, id_text, argv);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) /* the supervisor died before the line above */
            _exit(1);
        sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
        if (program == s->self_exe)
            execv(program, (char *const *)argv);
        else
            execvp(program, (char *const *)argv);
        fprintf(stderr, "run: cannot start %s: %s\n", c->name, strerror(errno));
        _exit(127);
    }
    if (pid < 0) {
        ds_log_error("cannot start %s: %s", c->name, strerror(errno));
        return -1;
    }
    c->pid = pid;
    c->state = CHILD_RUNNING;
    c->started = ds_now();
    return 0;
}

static void add_child(supervisor *s, const char *role, int id)
{
    child *c = &s->kids[s->n++];
    memset(c, 0, sizeof *c);
    c->role = role;
    c->id = id;
    c->backoff = RESTART_FIRST_S;
    if (id >= 0)
        snprintf(c->name, sizeof c->name, "%s%u", role, (unsigned char)id); /* id < DS_MAX_WORKERS */
    else
        snprintf(c->name, sizeof c->name, "%s", role);
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

/* Marks every child that has exited CHILD_EXITED, with its wait status. */
static void reap(supervisor *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < s->n; i++)
            if (s->kids[i].state == CHILD_RUNNING && s->kids[i].pid == pid) {
                s->kids[i].state = CHILD_EXITED;
                s->kids[i].status = status;
            }
}

/* Waits up to seconds for SIGINT, SIGTERM or SIGCHLD: the signal, or 0. */
static int wait_signal(const supervisor *s, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    int sig = sigtimedwait(&s->signals, NULL, &ts);
    return sig > 0 ? sig : 0;
}

static int running(const supervisor *s)
{
    int k = 0;
    for (int i = 0; i < s->n; i++)
        k += s->kids[i].state == CHILD_RUNNING;
    return k;
}

/* SIGTERM to every running role (and SIGCONT, so a stopped one acts on it,
 * as systemd does); SIGKILL after the grace period, or at once on a second
 * SIGINT/SIGTERM. */
static void stop_all(supervisor *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->kids[i].state == CHILD_RUNNING) {
            kill(s->kids[i].pid, SIGTERM);
            kill(s->kids[i].pid, SIGCONT);
        }
    double deadline = ds_now() + STOP_GRACE_S;
    while (running(s) && ds_now() < deadline) {
        int sig = wait_signal(s, deadline - ds_now());
        if (sig == SIGINT || sig == SIGTERM) {
            ds_log_warn("interrupted again: killing every role");
            break;
        }
        reap(s);
    }
    for (int i = 0; i < s->n; i++) {
        child *c = &s->kids[i];
        if (c->state != CHILD_RUNNING)
            continue;
        if (ds_now() >= deadline)
            ds_log_warn("%s did not stop in %.0f s: killing it", c->name, STOP_GRACE_S);
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &c->status, 0);
        c->state = CHILD_EXITED;
    }
}

/* Sets c's restart backoff seconds from now and doubles the next one. */
static double defer_restart(child *c, double now)
{
    double wait = c->backoff;
    c->restart_at = now + wait;
    c->backoff = 2 * wait < RESTART_MAX_S ? 2 * wait : RESTART_MAX_S;
    c->state = CHILD_RESTARTING;
    return wait;
}

/* A worker or the trainer has exited while the master runs. */
static void schedule_restart(child *c)
{
    char what[128];
    describe_exit(c, what, sizeof what);
    if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 2) {
        ds_log_error("%s (bad configuration): not restarting it", what);
        c->state = CHILD_DONE;
        return;
    }
    double now = ds_now();
    if (now - c->started >= RESTART_RESET_S)
        c->backoff = RESTART_FIRST_S;
    double wait = defer_restart(c, now);
    ds_log_warn("%s; restarting it in %.1f s", what, wait);
}

static void start_due(supervisor *s)
{
    double now = ds_now();
    for (int i = 0; i < s->n; i++) {
        child *c = &s->kids[i];
        if (c->state != CHILD_RESTARTING || c->restart_at > now)
            continue;
        if (start_child(s, c) == 0) {
            c->restarts++;
            ds_log_info("restarted %s (pid %d)", c->name, (int)c->pid);
        } else {
            ds_log_warn("trying %s again in %.1f s", c->name, defer_restart(c, now));
        }
    }
}

/* Seconds until the next pending restart, at most WAKE_S. */
static double next_wake(const supervisor *s)
{
    double wake = WAKE_S, now = ds_now();
    for (int i = 0; i < s->n; i++)
        if (s->kids[i].state == CHILD_RESTARTING && s->kids[i].restart_at - now < wake)
            wake = s->kids[i].restart_at - now;
    return wake;
}

/* The master has exited: its status is the run's. */
static int master_finished(supervisor *s)
{
    const child *m = &s->kids[s->master];
    int status = WIFEXITED(m->status) ? WEXITSTATUS(m->status) : 1;
    if (status) {
        char what[128];
        describe_exit(m, what, sizeof what);
        ds_log_error("%s", what);
    }
    stop_all(s);
    return status;
}

/* Restarts the other roles while the master runs; returns the run's status. */
static int supervise(supervisor *s)
{
    for (;;) {
        int sig = wait_signal(s, next_wake(s));
        if ((sig == SIGINT || sig == SIGTERM) && s->endless && !s->draining &&
            s->kids[s->master].state == CHILD_RUNNING) {
            s->draining = 1;
            kill(s->kids[s->master].pid, sig);
            ds_log_info("stopping: the master finishes its frames in flight (signal again to stop at once)");
        } else if (sig == SIGINT || sig == SIGTERM) {
            ds_log_warn("interrupted: stopping every role");
            stop_all(s);
            return 130;
        }
        reap(s);
        if (s->kids[s->master].state == CHILD_EXITED)
            return master_finished(s);
        for (int i = 0; i < s->n; i++)
            if (s->kids[i].state == CHILD_EXITED)
                schedule_restart(&s->kids[i]);
        start_due(s);
    }
}

static int start_all(supervisor *s, const ds_config *cfg)
{
    for (int i = 0; i < s->n; i++)
        if (start_child(s, &s->kids[i])) {
            stop_all(s);
            return -1;
        }
    ds_log_info("started %d processes: %s%d workers and the master", s->n,
                ds_config_needs_trainer(cfg) ? "the trainer, " : "", cfg->n_workers);
    return 0;
}

/* Roles that crashed while stopping, and how often each was restarted. */
static void report_end(const supervisor *s)
{
    for (int i = 0; i < s->n; i++) {
        const child *c = &s->kids[i];
        if (i != s->master && c->state == CHILD_EXITED && WIFSIGNALED(c->status) &&
            WTERMSIG(c->status) != SIGTERM && WTERMSIG(c->status) != SIGKILL) {
            char what[128];
            describe_exit(c, what, sizeof what);
            ds_log_error("%s", what);
        }
        if (c->restarts)
            ds_log_info("%s was restarted %d time%s", c->name, c->restarts, c->restarts > 1 ? "s" : "");
    }
}

int ds_run_main(const ds_config *cfg, const char *config_path, const char *self_exe)
{
    supervisor s;
    memset(&s, 0, sizeof s);
    s.self_exe = self_exe;
    s.config_path = config_path;
    s.endless = cfg->master.ifr_num == 0;
    sigemptyset(&s.signals);
    sigaddset(&s.signals, SIGINT);
    sigaddset(&s.signals, SIGTERM);
    sigaddset(&s.signals, SIGCHLD);
    sigprocmask(SIG_BLOCK, &s.signals, &s.old_mask);

    if (ds_config_needs_trainer(cfg))
        add_child(&s, "trainer", -1);
    for (int i = 0; i < cfg->n_workers; i++)
        add_child(&s, "worker", i);
    s.master = s.n;
    add_child(&s, "master", -1);

    int status = start_all(&s, cfg) ? 1 : supervise(&s);
    report_end(&s);
    sigprocmask(SIG_SETMASK, &s.old_mask, NULL);
    return status;
}

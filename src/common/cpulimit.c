#include "cpulimit.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undoes the mount table's octal escapes (\040 = space) in place. */
static void unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
            r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* Whether the comma-separated list has the token. */
static int has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, tok, n) && (p[n] == ',' || p[n] == '\0' || p[n] == '\n'))
            return 1;
    return 0;
}

/* The cgroup path of this process in the v1 hierarchy with the cpu
 * controller (v1 = 1) or in the unified v2 one (v1 = 0). */
static int cgroup_path(const char *file, int v1, char *path, size_t len)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (found && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = '\0';
        *c2 = '\0';
        const char *controllers = c1 + 1;
        int match = v1 ? has_token(controllers, "cpu") : !strcmp(line, "0") && controllers[0] == '\0';
        if (match) {
            c2[1 + strcspn(c2 + 1, "\n")] = '\0';
            if (strlen(c2 + 1) < len) {
                snprintf(path, len, "%s", c2 + 1);
                found = 0;
            }
        }
    }
    fclose(f);
    return found;
}

/* The mount point and mounted root of the v1 cpu hierarchy (v1 = 1) or of
 * the cgroup2 file system (v1 = 0). */
static int cgroup_mount(const char *file, int v1, char *point, char *root, size_t len)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    char line[8192];
    int found = -1;
    while (found && fgets(line, sizeof line, f)) {
        /* id parent major:minor root point options [optional...] - type source superoptions */
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        *sep = '\0';
        char type[64], source[256], super[1024] = "";
        if (sscanf(sep + 3, "%63s %255s %1023s", type, source, super) < 2)
            continue;
        int match = v1 ? !strcmp(type, "cgroup") && has_token(super, "cpu") : !strcmp(type, "cgroup2");
        char r[4096], p[4096];
        if (!match || sscanf(line, "%*s %*s %*s %4095s %4095s", r, p) != 2)
            continue;
        unescape(r);
        unescape(p);
        if (strlen(r) < len && strlen(p) < len) {
            snprintf(root, len, "%s", r);
            snprintf(point, len, "%s", p);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

/* One level's limit: 1 = a quota, 0 = none, -1 = no such files. */
static int read_level(const char *dir, int v1, long long *quota, long long *period)
{
    char path[8300];
    if (v1) {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        FILE *f = fopen(path, "r");
        if (!f)
            return -1;
        int ok = fscanf(f, "%lld", quota) == 1;
        fclose(f);
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if (!ok || !(f = fopen(path, "r")))
            return -1;
        ok = fscanf(f, "%lld", period) == 1;
        fclose(f);
        if (!ok)
            return -1;
        return *quota > 0 && *period > 0;
    }
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char q[32];
    int ok = fscanf(f, "%31s %lld", q, period) == 2;
    fclose(f);
    if (!ok)
        return -1;
    if (!strcmp(q, "max"))
        return 0;
    char *end;
    *quota = strtoll(q, &end, 10);
    return *end == '\0' && *quota > 0 && *period > 0 ? 1 : -1;
}

/* The tightest limit from the process's cgroup up to the hierarchy's
 * mounted root. Returns 0 when the hierarchy was found. */
static int read_hierarchy(const char *cgroup_file, const char *mountinfo_file, int v1, ds_cpu_limit *out)
{
    char path[4096], point[4096], root[4096];
    if (cgroup_path(cgroup_file, v1, path, sizeof path) || cgroup_mount(mountinfo_file, v1, point, root, sizeof root))
        return -1;
    /* The mount shows the subtree under root: the process must be in it. */
    size_t rl = strcmp(root, "/") ? strlen(root) : 0;
    if (strncmp(path, root, rl) || (path[rl] != '/' && path[rl] != '\0'))
        return -1;
    char dir[8200];
    snprintf(dir, sizeof dir, "%s%s", point, path + rl);
    size_t base = strlen(point);
    int any = 0;
    out->quota_us = -1;
    out->period_us = 0;
    for (;;) {
        size_t l = strlen(dir);
        while (l > base && dir[l - 1] == '/')
            dir[--l] = '\0';
        long long q, p;
        int r = read_level(dir, v1, &q, &p);
        any |= r >= 0;
        /* Tightest: the smallest share of a CPU, q/p. */
        if (r == 1 && (out->quota_us < 0 || (double)q / (double)p < (double)out->quota_us / (double)out->period_us)) {
            out->quota_us = q;
            out->period_us = p;
        }
        char *slash = strrchr(dir, '/');
        if (l <= base || !slash || (size_t)(slash - dir) < base)
            break;
        *slash = '\0';
    }
    /* The v2 root has no cpu.max; a v1 root has the files. Without any
     * files the controller is not active on this path. */
    if (!any && v1)
        return -1;
    out->quota_known = 1;
    return 0;
}

void ds_cpu_limit_quota(const char *cgroup_file, const char *mountinfo_file, ds_cpu_limit *out)
{
    if (!cgroup_file)
        cgroup_file = "/proc/self/cgroup";
    if (!mountinfo_file)
        mountinfo_file = "/proc/self/mountinfo";
    out->quota_known = 0;
    out->quota_us = -1;
    out->period_us = 0;
    /* A controller lives in one hierarchy: v1 where it is mounted there. */
    if (read_hierarchy(cgroup_file, mountinfo_file, 1, out) && read_hierarchy(cgroup_file, mountinfo_file, 0, out)) {
        out->quota_known = 0;
        out->quota_us = -1;
        out->period_us = 0;
    }
}

void ds_cpu_limit_self(ds_cpu_limit *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->cpus, sizeof out->cpus, "?");
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        out->n_cpus = CPU_COUNT(&set);
        size_t used = 0;
        out->cpus[0] = '\0';
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (!CPU_ISSET(c, &set))
                continue;
            int e = c;
            while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set))
                e++;
            char part[32];
            if (e > c)
                snprintf(part, sizeof part, "%s%d-%d", used ? "," : "", c, e);
            else
                snprintf(part, sizeof part, "%s%d", used ? "," : "", c);
            if (used + strlen(part) + 2 > sizeof out->cpus) {
                /* Too long for a key: the count and a marker instead. */
                snprintf(out->cpus, sizeof out->cpus, "%dcpus+", out->n_cpus);
                break;
            }
            memcpy(out->cpus + used, part, strlen(part) + 1);
            used += strlen(part);
            c = e;
        }
    }
    ds_cpu_limit_quota(NULL, NULL, out);
}

double ds_cpu_limit_cpus(const ds_cpu_limit *l)
{
    double q = l->quota_known && l->quota_us > 0 && l->period_us > 0 ? (double)l->quota_us / (double)l->period_us : 0;
    double n = l->n_cpus;
    if (q > 0 && (n <= 0 || q < n))
        return q;
    return n;
}

const char *ds_cpu_limit_key(const ds_cpu_limit *l, char *buf, size_t len)
{
    char cpus[sizeof l->cpus];
    snprintf(cpus, sizeof cpus, "%s", l->cpus);
    for (char *c = cpus; *c; c++)
        if (*c == ',')
            *c = '_';
        else if (*c == '?')
            *c = 'X';
    if (!l->quota_known)
        snprintf(buf, len, "cpu%s-quotaunknown", cpus);
    else if (l->quota_us < 0)
        snprintf(buf, len, "cpu%s-noquota", cpus);
    else
        snprintf(buf, len, "cpu%s-quota%lldper%lld", cpus, l->quota_us, l->period_us);
    return buf;
}

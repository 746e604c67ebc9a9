/* cpulimit.h - the CPU this process may use: its affinity mask and the
 * tightest cgroup CPU bandwidth limit (cgroup v2 cpu.max, or v1
 * cpu.cfs_quota_us / cpu.cfs_period_us) on its cgroup's path.
 *
 * Two processes on one host can see very different CPUs (a worker capped to
 * a quarter of a core next to an unlimited one), so anything measured about
 * speed, such as a worker's layer profile, is only valid for the same limits.
 * The cgroup is found through /proc/self/cgroup and the mount table
 * (/proc/self/mountinfo); where no cgroup file system is mounted in this
 * mount namespace (e.g. under `ip netns exec`), the quota is unknown. */
#ifndef DS_COMMON_CPULIMIT_H
#define DS_COMMON_CPULIMIT_H

#include <stddef.h>

typedef struct ds_cpu_limit {
    int n_cpus;          /* CPUs in the affinity mask (0 = unknown) */
    char cpus[64];       /* the mask as a list, e.g. "0-3" or "0,2"; "?" unknown */
    int quota_known;     /* the cgroup's CPU controller files were found */
    long long quota_us;  /* CPU time per period; -1 = no limit */
    long long period_us; /* of the tightest limit on the path */
} ds_cpu_limit;

/* This process's limits. */
void ds_cpu_limit_self(ds_cpu_limit *out);

/* The quota part from explicit files (for tests; NULL = /proc/self/cgroup,
 * /proc/self/mountinfo): the cgroup of the process, the mount table. Sets
 * quota_known, quota_us and period_us only. */
void ds_cpu_limit_quota(const char *cgroup_file, const char *mountinfo_file, ds_cpu_limit *out);

/* CPUs' worth of time the limits allow: min(n_cpus, quota / period);
 * 0 when neither is known. */
double ds_cpu_limit_cpus(const ds_cpu_limit *l);

/* A file-name-safe key, e.g. "cpu0-1-quota25000per100000",
 * "cpu0-1-noquota", "cpu0-1-quotaunknown". */
const char *ds_cpu_limit_key(const ds_cpu_limit *l, char *buf, size_t len);

#endif

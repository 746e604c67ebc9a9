/* The CPU limit a process runs under: cgroup v1 and v2 quotas found
 * through fake /proc/self/cgroup and mountinfo files over a scratch tree,
 * the tightest ancestor winning; and the cache key it gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cpulimit.h"

typedef struct scratch {
    char dir[256];
    char cgroup[300], mountinfo[300];
} scratch;

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdirs(const char *base, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    for (char *p = path + strlen(base) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    mkdir(path, 0755);
}

static void put_in(const scratch *s, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", s->dir, rel);
    put(path, text);
}

static int setup(void **state)
{
    scratch *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/ds_cpulimit_XXXXXX");
    if (!s || !mkdtemp(s->dir))
        return -1;
    snprintf(s->cgroup, sizeof s->cgroup, "%s/cgroup", s->dir);
    snprintf(s->mountinfo, sizeof s->mountinfo, "%s/mountinfo", s->dir);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    scratch *s = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    int rc = system(cmd);
    free(s);
    return rc == 0 ? 0 : -1;
}

static void test_v1_tightest_ancestor(void **state)
{
    scratch *s = *state;
    char text[2048];
    /* cpu and cpuacct mounted together at <dir>/cpu (a hybrid system). */
    put(s->cgroup, "4:memory:/elsewhere\n2:cpu,cpuacct:/ds/w0\n0::/\n");
    snprintf(text, sizeof text,
             "30 25 0:26 / %s/mem rw - cgroup cgroup rw,memory\n"
             "31 25 0:27 / %s/cpu rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
             "32 25 0:28 / %s/unified rw - cgroup2 cgroup2 rw\n",
             s->dir, s->dir, s->dir);
    put(s->mountinfo, text);
    mkdirs(s->dir, "cpu/ds/w0");
    put_in(s, "cpu/cpu.cfs_quota_us", "-1\n");
    put_in(s, "cpu/cpu.cfs_period_us", "100000\n");
    put_in(s, "cpu/ds/cpu.cfs_quota_us", "50000\n");
    put_in(s, "cpu/ds/cpu.cfs_period_us", "100000\n");
    put_in(s, "cpu/ds/w0/cpu.cfs_quota_us", "2500\n");
    put_in(s, "cpu/ds/w0/cpu.cfs_period_us", "10000\n");
    ds_cpu_limit l = {2, "0-1", 0, 0, 0};
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_true(l.quota_known);
    assert_int_equal(l.quota_us, 2500);
    assert_int_equal(l.period_us, 10000);
    assert_true(ds_cpu_limit_cpus(&l) > 0.2499 && ds_cpu_limit_cpus(&l) < 0.2501);
    char key[128];
    assert_string_equal(ds_cpu_limit_key(&l, key, sizeof key), "cpu0-1-quota2500per10000");

    /* The parent's limit is tighter: it wins. */
    put_in(s, "cpu/ds/cpu.cfs_quota_us", "10000\n");
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_int_equal(l.quota_us, 10000);
    assert_int_equal(l.period_us, 100000);

    /* No quota anywhere on the path. */
    put_in(s, "cpu/ds/cpu.cfs_quota_us", "-1\n");
    put_in(s, "cpu/ds/w0/cpu.cfs_quota_us", "-1\n");
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_true(l.quota_known);
    assert_int_equal(l.quota_us, -1);
    assert_true(ds_cpu_limit_cpus(&l) == 2);
    assert_string_equal(ds_cpu_limit_key(&l, key, sizeof key), "cpu0-1-noquota");
}

static void test_v2_cpu_max(void **state)
{
    scratch *s = *state;
    char text[2048];
    put(s->cgroup, "0::/system.slice/ds w0.service\n");
    /* A space in a path is escaped as \040 in the mount table. */
    mkdirs(s->dir, "cg 2/system.slice/ds w0.service");
    snprintf(text, sizeof text, "40 1 0:30 / %s/cg\\0402 rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", s->dir);
    put(s->mountinfo, text);
    put_in(s, "cg 2/system.slice/cpu.max", "max 100000\n");
    put_in(s, "cg 2/system.slice/ds w0.service/cpu.max", "25000 100000\n");
    ds_cpu_limit l = {4, "0-3", 0, 0, 0};
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_true(l.quota_known);
    assert_int_equal(l.quota_us, 25000);
    assert_int_equal(l.period_us, 100000);

    /* Affinity tighter than the quota: 1 CPU allowed, 1.5 CPUs of quota. */
    put_in(s, "cg 2/system.slice/ds w0.service/cpu.max", "150000 100000\n");
    ds_cpu_limit one = {1, "3", 0, 0, 0};
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &one);
    assert_true(ds_cpu_limit_cpus(&one) == 1);

    /* The v2 root has no cpu.max: no limit, but known. */
    put(s->cgroup, "0::/\n");
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_true(l.quota_known);
    assert_int_equal(l.quota_us, -1);
}

static void test_unknown_without_cgroup_fs(void **state)
{
    scratch *s = *state;
    /* `ip netns exec` remounts /sys: no cgroup file system in the table. */
    put(s->cgroup, "1:cpu:/ds/w0\n0::/\n");
    put(s->mountinfo, "22 1 0:21 / /sys rw - sysfs sysfs rw\n");
    ds_cpu_limit l = {2, "0,2", 1, 5, 5};
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_false(l.quota_known);
    char key[128];
    assert_string_equal(ds_cpu_limit_key(&l, key, sizeof key), "cpu0_2-quotaunknown");
    /* A process outside the mounted subtree is not guessed at either. */
    char text[1024];
    snprintf(text, sizeof text, "31 25 0:27 /other %s/cpu rw - cgroup cgroup rw,cpu\n", s->dir);
    put(s->mountinfo, text);
    ds_cpu_limit_quota(s->cgroup, s->mountinfo, &l);
    assert_false(l.quota_known);
}

static void test_self(void **state)
{
    (void)state;
    ds_cpu_limit l;
    ds_cpu_limit_self(&l);
    assert_true(l.n_cpus >= 1);
    assert_true(l.n_cpus <= (int)sysconf(_SC_NPROCESSORS_CONF));
    assert_true(ds_cpu_limit_cpus(&l) > 0);
    char key[128];
    ds_cpu_limit_key(&l, key, sizeof key);
    assert_non_null(strstr(key, "cpu"));
    assert_null(strchr(key, '/'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_v1_tightest_ancestor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_cpu_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_without_cgroup_fs, setup, teardown),
        cmocka_unit_test(test_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

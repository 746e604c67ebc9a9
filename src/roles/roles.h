/* roles.h - the services: worker, master, trainer, and `run` (all of them on
 * this machine).  Each *_main runs until done or until SIGINT/SIGTERM and
 * returns the process exit status (0 ok, 1 failure, 2 bad configuration). */
#ifndef DS_ROLES_H
#define DS_ROLES_H

#include "codec/codec.h"
#include "common/config.h"
#include "rpc/rpc.h"

int ds_worker_main(const ds_config *cfg, int id);
int ds_master_main(const ds_config *cfg);
int ds_trainer_main(const ds_config *cfg);
/* Starts the roles as child processes of self_exe with the same config
 * (config_path NULL = the default lookup) and waits for the master.
 * With DS_EMULATOR set (e.g. a qemu-user wrapper), children run as
 * "$DS_EMULATOR self_exe ROLE ...". */
int ds_run_main(const ds_config *cfg, const char *config_path, const char *self_exe);

/* Codec options for a link of mbps MB/s: updates in dif mode; compression
 * as configured (auto: lz4 on fast links, zstd below 10 MB/s). */
ds_codec_opts ds_link_codec(const ds_config *cfg, double mbps);
/* The MB/s a transfer's deadline assumes on link i (m->w0 = 0, wI->wI+1 =
 * I+1): master.bandwidth, or 1 MB/s when it is not configured (a slow link
 * must not look like a hung peer). */
double ds_link_deadline_mbps(const ds_config *cfg, int i);
/* The slowest link's compression: what the planner prices every payload
 * with (its size model takes one). */
ds_compress ds_slowest_link_compress(const ds_config *cfg);

/* The credentials of a role ("master", "trainer", "w0", ...) from the
 * configuration: its TLS files, the token; errors name the config key and
 * file.  Free with ds_rpc_security_free. */
ds_rpc_security *ds_role_security(const ds_config *cfg, const char *role, ds_error *err);

/* Blocks SIGINT and SIGTERM in the calling thread (call before starting
 * threads, so they inherit the mask) and waits for one of them for up to
 * timeout_s seconds (< 0: forever) in ds_signals_wait: 1 = signal, 0 = time
 * out. */
void ds_signals_block(void);
int ds_signals_wait(double timeout_s);

#endif

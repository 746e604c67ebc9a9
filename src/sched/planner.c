#include "planner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define HOP_LATENCY_S 0.002  /* one RPC hop with encode and decode, measured on loopback */
/* A link neither configured nor measured yet is priced at this rate (a LAN
 * or good Wi-Fi) for planning, though the run gets no prediction from it:
 * free, it invited plans that put a 3 MB tensor on a 1 MB/s link for the
 * frames before the measurement (three transfers) and the next re-plan. */
#define UNKNOWN_LINK_BPS 10e6
#define MAX_PLANS 2000000L

/* The prices: the model's bytes times the layer's measured ratio, if any.
 * Without an estimate of the updates, they are priced as full tensors
 * (times what the updates measured against that). */
static double ratio(const ds_planner *p, int full, int l)
{
    return p->ratio_model[full][l] > 0 ? p->ratio_act[full][l] / p->ratio_model[full][l] : 1.0;
}

static void price_layers(const ds_planner *p, const double *full_raw, const double *dif_raw, double *full,
                         double *dif)
{
    for (int l = 0; l < p->model->n_layers; l++) {
        full[l] = full_raw[l] * ratio(p, 1, l);
        dif[l] = dif_raw[l] * ratio(p, 0, l);
    }
}

/* full_raw from the non-zero fractions; dif_raw from frac (with_dif), else
 * the full sizes. */
static void size_layers(ds_planner *p, int with_dif)
{
    const ds_model *m = p->model;
    ds_compress c = p->compress;
    for (int l = 0; l < m->n_layers; l++) {
        const ds_shape *s = &m->layers[l].out_shape;
        ds_dtype t = l == 0 ? DS_U8 : DS_F32; /* frames travel as u8 */
        int ch = ds_predict_channels(s);
        if (!p->pred) {
            p->full_raw[l] = (double)ds_shape_numel(s) * ds_dtype_size(t);
            p->dif_raw[l] = p->full_raw[l];
            continue;
        }
        const double *nz = ds_predictors_nonzero(p->pred, l);
        float nzf[4096];
        for (int k = 0; k < ch && k < 4096; k++)
            nzf[k] = l == 0 ? 1.0f : (float)nz[k];
        p->full_raw[l] = (double)ds_codec_predict_bytes(s, t, nzf, c);
        p->dif_raw[l] = with_dif ? (double)ds_codec_predict_bytes(s, t, p->frac[l], c) : p->full_raw[l];
    }
    price_layers(p, p->full_raw, p->dif_raw, p->full_bytes, p->dif_bytes);
}

static int init(ds_planner *p, const ds_config *cfg, const ds_model *m, double **costs,
                ds_predictors *pred, ds_compress compress, ds_error *err)
{
    memset(p, 0, sizeof *p);
    p->cfg = cfg;
    p->model = m;
    p->pred = pred;
    p->compress = compress;
    int n = m->n_layers;
    for (int i = 0; i < cfg->n_workers; i++) {
        p->costs[i] = costs[i];
        costs[i] = NULL;
    }
    /* Without predictors there is nothing to plan updates with. */
    p->policy = ds_sched_policy_of(pred ? cfg->master.scheduler : DS_SCHED_LBC);
    if (!p->policy)
        return ds_errorf(err, "planner: unknown scheduler %d", (int)cfg->master.scheduler);
    p->allowed = calloc((size_t)n, sizeof *p->allowed);
    p->full_bytes = calloc((size_t)n, sizeof *p->full_bytes);
    p->dif_bytes = calloc((size_t)n, sizeof *p->dif_bytes);
    p->full_raw = calloc((size_t)n, sizeof *p->full_raw);
    p->dif_raw = calloc((size_t)n, sizeof *p->dif_raw);
    p->frac = calloc((size_t)n, sizeof *p->frac);
    p->seg_full = calloc((size_t)n, sizeof *p->seg_full);
    p->seg_dif_sum = calloc((size_t)n, sizeof *p->seg_dif_sum);
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        ok &= (p->ratio_act[k] = calloc((size_t)n, sizeof(double))) != NULL;
        ok &= (p->ratio_model[k] = calloc((size_t)n, sizeof(double))) != NULL;
    }
    for (int i = 0; i < cfg->n_workers; i++)
        if ((p->profiled[i] = malloc(sizeof(double) * (size_t)n)))
            memcpy(p->profiled[i], p->costs[i], sizeof(double) * (size_t)n);
        else
            ok = 0;
    int *art = malloc(sizeof(int) * (size_t)n);
    if (!ok || !p->allowed || !p->full_bytes || !p->dif_bytes || !p->full_raw || !p->dif_raw || !p->frac ||
        !p->seg_full || !p->seg_dif_sum || !art) {
        free(art);
        return ds_errorf(err, "out of memory");
    }
    for (int l = 0; l < n; l++) {
        int ch = ds_predict_channels(&m->layers[l].out_shape);
        if (ch > 4096) {
            free(art);
            return ds_errorf(err, "layer %d (%s) has %d channels, more than the planner's 4096", l,
                             m->layers[l].name, ch);
        }
        p->frac[l] = calloc((size_t)(ch ? ch : 1), sizeof(float));
        if (!p->frac[l]) {
            free(art);
            return ds_errorf(err, "out of memory");
        }
    }
    int n_art = ds_model_articulations(m, art);
    for (int i = 0; i < n_art; i++)
        p->allowed[art[i]] = 1;
    free(art);

    p->cm.n_layers = n;
    p->cm.n_workers = cfg->n_workers;
    p->cm.pd_num = cfg->master.pd_num;
    double cap[DS_MAX_WORKERS], total0 = 0;
    for (int l = 0; l < n; l++)
        total0 += p->costs[0][l];
    for (int i = 0; i < cfg->n_workers; i++) {
        p->cm.compute[i] = p->costs[i];
        p->cm.bandwidth[i] = cfg->master.bandwidth_given ? cfg->master.bandwidth[i] * 1e6 : UNKNOWN_LINK_BPS;
        p->cm.hop_latency[i] = HOP_LATENCY_S;
        p->link_known[i] = cfg->master.bandwidth_given;
        p->cold_seconds[i] = -1;
        ds_linkrate_init(&p->link[i]);
        double t = 0;
        for (int l = 0; l < n; l++)
            t += p->costs[i][l];
        cap[i] = t > 0 ? total0 / t : 1; /* relative to worker 0, as the original */
    }
    return ds_plan_lbc(n, p->costs[0], p->allowed, cfg->n_workers, cap, &p->lbc, err);
}

int ds_planner_init(ds_planner *p, const ds_config *cfg, const ds_model *m, double **costs,
                    ds_predictors *pred, ds_compress compress, ds_error *err)
{
    if (init(p, cfg, m, costs, pred, compress, err)) {
        ds_planner_free(p); /* what it took ownership of, too */
        return -1;
    }
    return 0;
}

void ds_input_change(const ds_tensor *prev, const ds_tensor *cur, float *frac)
{
    int64_t c = cur->shape.dims[1], plane = cur->shape.dims[2] * cur->shape.dims[3];
    const uint8_t *a = prev->data, *b = cur->data;
    for (int64_t k = 0; k < c; k++) {
        int64_t changed = 0;
        for (int64_t i = 0; i < plane; i++)
            changed += a[k * plane + i] != b[k * plane + i];
        frac[k] = plane ? (float)changed / (float)plane : 0;
    }
}

static void log_plan(const ds_planner *p, const char *why)
{
    if (p->quiet)
        return;
    /* Workers by their ids in the whole chain; the ones off the planned
     * chain have nothing to do. */
    int n = p->current.n_workers;
    ds_plan named = {p->ids ? p->ids[n - 1] + 1 : n, {0}};
    for (int i = 0, k = 0; i < named.n_workers; i++) {
        if (k < n && (p->ids ? p->ids[k] : k) == i)
            named.cut[i] = p->current.cut[k++];
        else
            named.cut[i] = i ? named.cut[i - 1] : 0;
    }
    char text[256];
    ds_log_info("plan %u (%s): %s, predicted %.3f s per frame, latency %.3f s", p->plan_id, why,
            ds_plan_str(&named, text, sizeof text), p->predicted.per_frame, p->predicted.mean_latency);
}

/* The last worker with work under plan pl (as the cost model sees it). */
static int last_active(const ds_plan *pl)
{
    int last = 0;
    for (int i = 0; i < pl->n_workers; i++)
        if (pl->cut[i] > (i ? pl->cut[i - 1] : 0))
            last = i;
    return last;
}

/* 1 when every link plan pl uses is configured or measured. */
static int links_known(const ds_planner *p, const ds_plan *pl)
{
    for (int i = 0; i <= last_active(pl); i++)
        if (!p->link_known[i])
            return 0;
    return 1;
}

/* Seconds of `frames` frames under plan pl, their payloads from the size
 * model (full_raw; dif_raw: the updates' mean), priced with what is known
 * now. */
static double price_segment(const ds_planner *p, const ds_plan *pl, const double *full_raw, const double *dif_raw,
                            int frames)
{
    int n = p->model->n_layers;
    double *buf = malloc(sizeof(double) * 2 * (size_t)n);
    if (!buf)
        return NAN;
    price_layers(p, full_raw, dif_raw, buf, buf + n);
    ds_sim_result r;
    ds_cost_simulate(&p->cm, pl, buf, p->cfg->mode == DS_MODE_DIF ? buf + n : NULL, frames, 1, &r);
    free(buf);
    return r.makespan;
}

/* Closes the segment [seg_start, end) into the run's prediction.  A plan
 * using a link not yet measured is kept aside (the first plans of a run
 * come before any measurement) and priced when the prediction is asked
 * for; beyond DS_PLANNER_PENDING of them, the run has no prediction. */
static void close_segment(ds_planner *p, int end)
{
    if (end <= p->seg_start)
        return;
    int n = p->model->n_layers;
    double *dif_raw = malloc(sizeof(double) * (size_t)n);
    if (!dif_raw) {
        p->run_unknown = 1;
        return;
    }
    for (int l = 0; l < n; l++)
        dif_raw[l] = p->seg_dif_frames ? p->seg_dif_sum[l] / p->seg_dif_frames : p->seg_full[l];
    if (links_known(p, &p->current)) {
        p->predicted_run += price_segment(p, &p->current, p->seg_full, dif_raw, end - p->seg_start);
        free(dif_raw);
        return;
    }
    ds_planner_pending *k = &p->pending[p->n_pending];
    if (p->n_pending == DS_PLANNER_PENDING || !(k->full = malloc(sizeof(double) * (size_t)n))) {
        p->run_unknown = 1;
        free(dif_raw);
        return;
    }
    memcpy(k->full, p->seg_full, sizeof(double) * (size_t)n);
    k->dif = dif_raw;
    k->plan = p->current;
    k->frames = end - p->seg_start;
    p->n_pending++;
}

static void open_segment(ds_planner *p, int start)
{
    p->seg_start = start;
    p->seg_dif_frames = 0;
    memcpy(p->seg_full, p->full_raw, sizeof(double) * (size_t)p->model->n_layers);
    memset(p->seg_dif_sum, 0, sizeof(double) * (size_t)p->model->n_layers);
}

/* ------------------------------------------------- the schedulers' policies */

static const char *full_why(const ds_planner *p)
{
    return p->cfg->mode == DS_MODE_DIF ? "first frame, full tensors" : "full tensors";
}

static int lbc_first(const ds_planner *p, int frames_left, ds_plan *plan, ds_sim_result *r,
                     const char **why, ds_error *err)
{
    (void)err;
    *plan = p->lbc;
    ds_cost_simulate(&p->cm, plan, p->full_bytes, p->cfg->mode == DS_MODE_DIF ? p->dif_bytes : NULL,
                     frames_left, 1, r);
    *why = "load-balanced";
    return 0;
}

/* lbc keeps its plan: it does not depend on the frames. */
static int keep_plan(const ds_planner *p, int frame, int horizon, ds_plan *cand, ds_sim_result *r,
                     ds_error *err)
{
    (void)p, (void)frame, (void)horizon, (void)cand, (void)r, (void)err;
    return 0;
}

/* Frame 0 travels in full: nsc plans it on its own. */
static int nsc_first(const ds_planner *p, int frames_left, ds_plan *plan, ds_sim_result *r,
                     const char **why, ds_error *err)
{
    (void)frames_left, (void)err;
    ds_sched_nsc(&p->cm, p->allowed, p->full_bytes, NULL, 1, 1, &p->lbc, plan, r);
    *why = full_why(p);
    return 0;
}

/* nsc plans the updates once, at the first evaluation, then keeps the plan. */
static int nsc_replan(const ds_planner *p, int frame, int horizon, ds_plan *cand, ds_sim_result *r,
                      ds_error *err)
{
    (void)err;
    if (frame != 1)
        return 0;
    ds_sched_nsc(&p->cm, p->allowed, p->full_bytes, p->dif_bytes, horizon, 1, &p->lbc, cand, r);
    return 1;
}

/* In dif mode only frame 0 travels in full; in itg mode every frame does. */
static int opt_first(const ds_planner *p, int frames_left, ds_plan *plan, ds_sim_result *r,
                     const char **why, ds_error *err)
{
    int frames = p->cfg->mode == DS_MODE_DIF ? 1 : frames_left;
    if (ds_sched_optimal(&p->cm, p->allowed, p->full_bytes, NULL, frames, 1, MAX_PLANS, plan, r, err) < 0)
        return -1;
    *why = full_why(p);
    return 0;
}

static int opt_replan(const ds_planner *p, int frame, int horizon, ds_plan *cand, ds_sim_result *r,
                      ds_error *err)
{
    (void)frame;
    if (ds_sched_optimal(&p->cm, p->allowed, p->full_bytes, p->dif_bytes, horizon, 1, MAX_PLANS, cand,
                         r, err) < 0)
        return -1;
    return 1;
}

static const ds_sched_policy policies[] = {
    [DS_SCHED_LBC] = {DS_SCHED_LBC, 0, lbc_first, keep_plan},
    [DS_SCHED_NSC] = {DS_SCHED_NSC, 0, nsc_first, nsc_replan},
    [DS_SCHED_OPT] = {DS_SCHED_OPT, DS_REPLAN_FRAMES, opt_first, opt_replan},
};
_Static_assert(sizeof policies / sizeof *policies == DS_SCHED_COUNT,
               "one descriptor per scheduler the configuration names");

const ds_sched_policy *ds_sched_policy_of(ds_scheduler s)
{
    return (unsigned)s < DS_SCHED_COUNT ? &policies[s] : NULL;
}

/* ------------------------------------------------------------- planning */

/* At an evaluation of the predictors: the policy's proposal, taken only when
 * it beats keeping the current plan (which costs no full transfer) over the
 * proposal's horizon. */
static int replan(ds_planner *p, int frame, int frames_left, int *changed, ds_error *err)
{
    int h = p->policy->horizon;
    int horizon = h && frames_left > h ? h : frames_left;
    ds_sim_result keep;
    ds_cost_simulate(&p->cm, &p->current, p->full_bytes, p->dif_bytes, horizon, 0, &keep);
    ds_plan cand;
    ds_sim_result cr;
    int proposed = p->policy->replan(p, frame, horizon, &cand, &cr, err);
    if (proposed < 0)
        return -1;
    if (!proposed || memcmp(cand.cut, p->current.cut, sizeof cand.cut) == 0 ||
        keep.makespan <= cr.makespan) {
        p->predicted = keep;
        return 0;
    }
    close_segment(p, frame);
    p->current = cand;
    p->predicted = cr;
    p->plan_id++;
    *changed = 1;
    open_segment(p, frame);
    log_plan(p, frame == 1 ? "updates" : "re-planned for the recent change");
    return 0;
}

int ds_planner_plan(ds_planner *p, int frame, const float *input_frac, int *changed, ds_error *err)
{
    const ds_config *cfg = p->cfg;
    *changed = 0;
    int dif = cfg->mode == DS_MODE_DIF;
    int frames_left = cfg->master.ifr_num - frame;
    if (frame == 0) {
        p->plan_id = 1;
        *changed = 1;
        size_layers(p, 0);
        const char *why = "";
        if (p->policy->first(p, frames_left, &p->current, &p->predicted, &why, err))
            return -1;
        open_segment(p, 0);
        log_plan(p, why);
        return 0;
    }
    /* Plans depend on the frames only through the predicted updates. */
    if (!p->pred || !dif || !input_frac)
        return 0;
    int channels = ds_predict_channels(&p->model->layers[0].out_shape);
    for (int k = 0; k < channels && k < DS_PLANNER_MAX_INPUT; k++)
        p->input_sum[k] += input_frac[k];
    p->input_n++;
    if (frame == 1 || frame % DS_REPLAN_FRAMES == 0) {
        float mean[DS_PLANNER_MAX_INPUT];
        for (int k = 0; k < channels && k < DS_PLANNER_MAX_INPUT; k++) {
            mean[k] = (float)(p->input_sum[k] / p->input_n);
            p->input_sum[k] = 0;
        }
        p->input_n = 0;
        if (ds_predictors_eval(p->pred, p->model, mean, p->frac, err))
            return -1;
        size_layers(p, 1);
        p->have_dif = 1;
        ds_log_debug("frame %d: input change %.3f, predicted input update %.0f KB (full %.0f KB)", frame,
                 mean[0], p->dif_bytes[0] / 1e3, p->full_bytes[0] / 1e3);
        if (replan(p, frame, frames_left, changed, err))
            return -1;
    }
    if (p->have_dif) {
        for (int l = 0; l < p->model->n_layers; l++)
            p->seg_dif_sum[l] += p->dif_raw[l];
        p->seg_dif_frames++;
    }
    return 0;
}

double ds_planner_predicted_per_frame(ds_planner *p, int n_frames)
{
    if (n_frames <= 0)
        return 0;
    double closed = p->predicted_run;
    int unknown = p->run_unknown, pending = p->n_pending;
    close_segment(p, n_frames);
    double total = p->predicted_run;
    int now_unknown = p->run_unknown;
    for (int i = 0; i < p->n_pending; i++) {
        const ds_planner_pending *k = &p->pending[i];
        now_unknown |= !links_known(p, &k->plan);
        total += price_segment(p, &k->plan, k->full, k->dif, k->frames);
    }
    /* The open segment may still grow: back to what was closed. */
    for (int i = pending; i < p->n_pending; i++) {
        free(p->pending[i].full);
        free(p->pending[i].dif);
    }
    p->n_pending = pending;
    p->predicted_run = closed;
    p->run_unknown = unknown;
    return now_unknown || isnan(total) ? NAN : total / n_frames;
}

/* ------------------------------------------------------------ measuring */

/* The layer whose tensor crosses link k under plan pl: the input up to the
 * first worker with work, then the cut of the last worker with work before k. */
static int crossing_layer(const ds_plan *pl, int k)
{
    int crossing = 0, prev = 0;
    for (int i = 0; i < k; i++) {
        if (pl->cut[i] > prev)
            crossing = pl->cut[i];
        prev = pl->cut[i];
    }
    return crossing;
}

/* "m->w0", "w0->w1" by the workers' ids in the whole chain. */
static const char *link_name(const ds_planner *p, int k, char *buf, size_t len)
{
    int to = p->ids ? p->ids[k] : k;
    if (k == 0)
        snprintf(buf, len, "m->w%d", to);
    else
        snprintf(buf, len, "w%d->w%d", p->ids ? p->ids[k - 1] : k - 1, to);
    return buf;
}

void ds_planner_observe_link(ds_planner *p, int frame, int k, double bytes, double ready, double end)
{
    if (k < 0 || k >= p->cm.n_workers)
        return;
    ds_linkrate_add(&p->link[k], bytes, ready, end);
    double rate, latency;
    if (ds_linkrate_get(&p->link[k], HOP_LATENCY_S, &rate, &latency)) {
        int first = p->link_rate[k] == 0;
        p->link_rate[k] = rate;
        p->link_latency[k] = latency;
        if (!p->cfg->master.bandwidth_given) {
            p->cm.bandwidth[k] = rate;
            p->cm.hop_latency[k] = latency;
            p->link_known[k] = 1;
        }
        char name[32];
        if (first && !p->quiet)
            ds_log_info("link %s measured: %.3g MB/s, %.1f ms per transfer%s", link_name(p, k, name, sizeof name),
                        rate / 1e6, latency * 1e3,
                        p->cfg->master.bandwidth_given ? " (the configured bandwidth is used)" : "");
    }
    /* The bytes against the size model's for the layer that crossed: full
     * on the first frame of a plan (or always, in itg mode). */
    if (frame < p->seg_start)
        return;
    int full = p->cfg->mode != DS_MODE_DIF || frame == p->seg_start;
    int l = crossing_layer(&p->current, k);
    double model = full ? p->full_raw[l] : p->dif_raw[l];
    if (!(model > 0) || !(bytes > 0))
        return;
    double keep = 1.0 - DS_LINKRATE_DECAY;
    p->ratio_act[full][l] = p->ratio_act[full][l] * keep + bytes;
    p->ratio_model[full][l] = p->ratio_model[full][l] * keep + model;
}

/* Worker k's layer costs: its profile times what it measured against it. */
static void scale_costs(ds_planner *p, int k)
{
    double scale = p->busy_profiled[k] > 0 ? p->busy[k] / p->busy_profiled[k] : 1.0;
    for (int l = 0; l < p->model->n_layers; l++)
        p->costs[k][l] = p->profiled[k][l] * scale;
}

void ds_planner_observe_compute(ds_planner *p, int frame, int k, double seconds)
{
    if (k < 0 || k >= p->cm.n_workers || frame < p->seg_start || !(seconds >= 0))
        return;
    double job = 0;
    for (int l = (k ? p->current.cut[k - 1] : 0) + 1; l <= p->current.cut[k]; l++)
        job += p->profiled[k][l];
    if (frame == p->seg_start) {
        p->cold_seconds[k] = seconds; /* kernels and buffers set up, tensors in full */
    } else if (job > 0) {
        double keep = 1.0 - DS_LINKRATE_DECAY;
        p->busy[k] = p->busy[k] * keep + seconds;
        p->busy_profiled[k] = p->busy_profiled[k] * keep + job;
        scale_costs(p, k);
    }
    if (job > 0 && p->busy_profiled[k] > 0 && p->cold_seconds[k] >= 0)
        p->cm.cold[k] = fmax(0, p->cold_seconds[k] - job * p->busy[k] / p->busy_profiled[k]);
}

void ds_planner_inherit(ds_planner *p, const int *ids, const ds_planner *from, const int *from_ids)
{
    int n = p->cm.n_workers, m = from->cm.n_workers;
    for (int k = 0; k < n; k++)
        for (int j = 0; j < m; j++) {
            if (ids[k] != from_ids[j])
                continue;
            /* The same worker: its time against its profile. */
            p->busy[k] = from->busy[j];
            p->busy_profiled[k] = from->busy_profiled[j];
            p->cm.cold[k] = from->cm.cold[j];
            scale_costs(p, k);
            /* The same link: from the master, or from the same worker. */
            if ((k == 0) != (j == 0) || (k && ids[k - 1] != from_ids[j - 1]))
                continue;
            p->link[k] = from->link[j];
            p->link_rate[k] = from->link_rate[j];
            p->link_latency[k] = from->link_latency[j];
            if (!p->cfg->master.bandwidth_given && from->link_known[j]) {
                p->cm.bandwidth[k] = from->cm.bandwidth[j];
                p->cm.hop_latency[k] = from->cm.hop_latency[j];
                p->link_known[k] = 1;
            }
        }
    p->source_sum = from->source_sum;
    p->source_w = from->source_w;
    p->cm.source = from->cm.source;
    if (p->model->n_layers == from->model->n_layers)
        for (int f = 0; f < 2; f++) {
            memcpy(p->ratio_act[f], from->ratio_act[f], sizeof(double) * (size_t)p->model->n_layers);
            memcpy(p->ratio_model[f], from->ratio_model[f], sizeof(double) * (size_t)p->model->n_layers);
        }
    price_layers(p, p->full_raw, p->dif_raw, p->full_bytes, p->dif_bytes);
}

void ds_planner_observe_source(ds_planner *p, double seconds)
{
    if (!(seconds >= 0))
        return;
    double keep = 1.0 - DS_LINKRATE_DECAY;
    p->source_sum = p->source_sum * keep + seconds;
    p->source_w = p->source_w * keep + 1;
    p->cm.source = p->source_sum / p->source_w;
}

char *ds_planner_measured_str(const ds_planner *p, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
#define PUT(...)                                                                                       \
    do {                                                                                               \
        if (used < len) {                                                                              \
            int w_ = snprintf(buf + used, len - used, __VA_ARGS__);                                    \
            used += w_ > 0 ? (size_t)w_ : 0;                                                           \
        }                                                                                              \
    } while (0)
    for (int k = 0; k < p->cm.n_workers; k++) {
        char name[32];
        if (p->link_rate[k] > 0) {
            PUT("%s%s %.3g MB/s", used ? ", " : "", link_name(p, k, name, sizeof name), p->link_rate[k] / 1e6);
            if (p->cfg->master.bandwidth_given)
                PUT(" (configured %.3g)", p->cfg->master.bandwidth[k]);
        }
    }
    for (int k = 0; k < p->cm.n_workers; k++)
        if (p->busy_profiled[k] > 0) {
            PUT("%sw%d %.2fx its profile", used ? ", " : "", p->ids ? p->ids[k] : k,
                p->busy[k] / p->busy_profiled[k]);
            if (p->cm.cold[k] > 0)
                PUT(" (+%.3f s cold)", p->cm.cold[k]);
        }
    if (p->source_w > 0)
        PUT("%smaster %.1f ms per frame", used ? ", " : "", p->cm.source * 1e3);
    if (p->ratio_model[0][0] > 0)
        PUT("%sinput updates %.2fx the size model", used ? ", " : "", ratio(p, 0, 0));
#undef PUT
    if (used >= len && len > 0)
        buf[len - 1] = '\0';
    return buf;
}

void ds_planner_free(ds_planner *p)
{
    for (int i = 0; i < DS_MAX_WORKERS; i++)
        free(p->costs[i]);
    if (p->frac)
        for (int l = 0; l < p->model->n_layers; l++)
            free(p->frac[l]);
    free(p->frac);
    free(p->allowed);
    free(p->full_bytes);
    free(p->dif_bytes);
    free(p->full_raw);
    free(p->dif_raw);
    for (int k = 0; k < 2; k++) {
        free(p->ratio_act[k]);
        free(p->ratio_model[k]);
    }
    for (int i = 0; i < DS_MAX_WORKERS; i++)
        free(p->profiled[i]);
    for (int i = 0; i < p->n_pending; i++) {
        free(p->pending[i].full);
        free(p->pending[i].dif);
    }
    free(p->seg_full);
    free(p->seg_dif_sum);
    ds_predictors_free(p->pred);
    memset(p, 0, sizeof *p);
}

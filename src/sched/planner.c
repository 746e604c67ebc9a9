#include "planner.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define HOP_LATENCY_S 0.002  /* one RPC hop with encode and decode, measured on loopback */
#define MAX_PLANS 2000000L

/* full_bytes from the non-zero fractions; dif_bytes from frac. */
static void size_layers(ds_planner *p, int with_dif)
{
    const ds_model *m = p->model;
    ds_compress c = p->compress;
    for (int l = 0; l < m->n_layers; l++) {
        const ds_shape *s = &m->layers[l].out_shape;
        ds_dtype t = l == 0 ? DS_U8 : DS_F32; /* frames travel as u8 */
        int ch = ds_predict_channels(s);
        if (!p->pred) {
            p->full_bytes[l] = (double)ds_shape_numel(s) * ds_dtype_size(t);
            continue;
        }
        const double *nz = ds_predictors_nonzero(p->pred, l);
        float nzf[4096];
        for (int k = 0; k < ch && k < 4096; k++)
            nzf[k] = l == 0 ? 1.0f : (float)nz[k];
        p->full_bytes[l] = (double)ds_codec_predict_bytes(s, t, nzf, c);
        if (with_dif)
            p->dif_bytes[l] = (double)ds_codec_predict_bytes(s, t, p->frac[l], c);
    }
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
    p->frac = calloc((size_t)n, sizeof *p->frac);
    p->seg_full = calloc((size_t)n, sizeof *p->seg_full);
    p->seg_dif_sum = calloc((size_t)n, sizeof *p->seg_dif_sum);
    int *art = malloc(sizeof(int) * (size_t)n);
    if (!p->allowed || !p->full_bytes || !p->dif_bytes || !p->frac || !p->seg_full || !p->seg_dif_sum || !art) {
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
    p->cm.hop_latency = HOP_LATENCY_S;
    p->cm.pd_num = cfg->master.pd_num;
    double cap[DS_MAX_WORKERS], total0 = 0;
    for (int l = 0; l < n; l++)
        total0 += p->costs[0][l];
    for (int i = 0; i < cfg->n_workers; i++) {
        p->cm.compute[i] = p->costs[i];
        p->cm.bandwidth[i] = cfg->master.bandwidth[i] * 1e6;
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

/* Closes the segment [seg_start, end) into the run's prediction. */
static void close_segment(ds_planner *p, int end)
{
    if (end <= p->seg_start)
        return;
    int n = p->model->n_layers;
    double *dif = NULL;
    if (p->seg_dif_frames && (dif = malloc(sizeof *dif * (size_t)n)))
        for (int l = 0; l < n; l++)
            dif[l] = p->seg_dif_sum[l] / p->seg_dif_frames;
    ds_sim_result r;
    ds_cost_simulate(&p->cm, &p->current, p->seg_full, dif, end - p->seg_start, 1, &r);
    free(dif);
    p->predicted_run += r.makespan;
}

static void open_segment(ds_planner *p, int start)
{
    p->seg_start = start;
    p->seg_dif_frames = 0;
    memcpy(p->seg_full, p->full_bytes, sizeof(double) * (size_t)p->model->n_layers);
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
    ds_cost_simulate(&p->cm, plan, p->full_bytes, NULL, frames_left, 1, r);
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
            p->seg_dif_sum[l] += p->dif_bytes[l];
        p->seg_dif_frames++;
    }
    return 0;
}

double ds_planner_predicted_per_frame(ds_planner *p, int n_frames)
{
    if (n_frames <= 0)
        return 0;
    double closed = p->predicted_run;
    close_segment(p, n_frames);
    double total = p->predicted_run;
    p->predicted_run = closed; /* the open segment may still grow */
    return total / n_frames;
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
    free(p->seg_full);
    free(p->seg_dif_sum);
    ds_predictors_free(p->pred);
    memset(p, 0, sizeof *p);
}

#include "cost.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* Stage durations of one frame (full: the first under the plan): stages
 * alternate link, compute, link, ... up to the last worker with work.
 * Returns the number of stages. */
static int frame_stages(const ds_cost_model *cm, const ds_plan *p, const double *bytes, int full,
                        double *dur)
{
    int last = 0, prev = 0;
    for (int i = 0; i < p->n_workers; i++)
        if (p->cut[i] > (i ? p->cut[i - 1] : 0))
            last = i;
    int n = 0, crossing = 0; /* layer whose tensor travels on the next link */
    for (int i = 0; i <= last; i++) {
        double bw = cm->bandwidth[i] > 0 ? cm->bandwidth[i] : 1e30;
        dur[n++] = (i ? 0 : cm->source) + bytes[crossing] / bw + cm->hop_latency[i];
        double c = full ? cm->cold[i] : 0;
        for (int l = prev + 1; l <= p->cut[i]; l++)
            c += cm->compute[i][l];
        dur[n++] = c;
        if (p->cut[i] > prev)
            crossing = p->cut[i];
        prev = p->cut[i];
    }
    return n;
}

void ds_cost_simulate(const ds_cost_model *cm, const ds_plan *p, const double *full_bytes,
                      const double *dif_bytes, int n_frames, int first_full, ds_sim_result *out)
{
    enum { MAX_STAGES = 2 * DS_MAX_WORKERS };
    double full_dur[MAX_STAGES], dif_dur[MAX_STAGES];
    int n_stages = frame_stages(cm, p, full_bytes, 1, full_dur);
    frame_stages(cm, p, dif_bytes ? dif_bytes : full_bytes, 0, dif_dur);
    memset(out, 0, sizeof *out);
    if (n_frames < 1)
        n_frames = 1;
    /* finish[s] of the previous frame; done[] keeps every frame's end for
     * the window (frame f waits for frame f - pd_num). */
    double finish[MAX_STAGES] = {0};
    double *done = malloc(sizeof(double) * (size_t)n_frames);
    double latency_sum = 0;
    for (int f = 0; f < n_frames; f++) {
        const double *dur = f == 0 && first_full ? full_dur : dif_dur;
        double t = 0;
        if (cm->pd_num > 0 && f >= cm->pd_num && done)
            t = done[f - cm->pd_num];
        double start = t;
        for (int s = 0; s < n_stages; s++) {
            double begin = t > finish[s] ? t : finish[s];
            if (s == 0)
                start = begin;
            t = begin + dur[s];
            finish[s] = t;
            out->stage_busy[s] += dur[s];
        }
        if (done)
            done[f] = t;
        latency_sum += t - start;
        out->makespan = t;
    }
    free(done);
    out->per_frame = out->makespan / n_frames;
    out->mean_latency = latency_sum / n_frames;
}

/* Better: shorter time per frame, then shorter latency. */
static int better(const ds_sim_result *a, const ds_sim_result *b)
{
    const double eps = 1e-12;
    if (a->per_frame < b->per_frame - eps)
        return 1;
    return a->per_frame <= b->per_frame + eps && a->mean_latency < b->mean_latency - eps;
}

typedef struct search {
    const ds_cost_model *cm;
    const int *allowed;
    const double *full, *dif;
    int n_frames, first_full;
    long evaluated, max_plans;
    ds_plan cur, best;
    ds_sim_result best_result;
    int have_best;
} search;

static void enumerate(search *s, int worker, int from)
{
    int last = s->cm->n_layers - 1;
    if (worker == s->cm->n_workers - 1) {
        s->cur.cut[worker] = last;
        ds_sim_result r;
        ds_cost_simulate(s->cm, &s->cur, s->full, s->dif, s->n_frames, s->first_full, &r);
        s->evaluated++;
        if (!s->have_best || better(&r, &s->best_result)) {
            s->best = s->cur;
            s->best_result = r;
            s->have_best = 1;
        }
        return;
    }
    for (int c = from; c <= last; c++) {
        if (c != 0 && c != last && s->allowed && !s->allowed[c])
            continue;
        s->cur.cut[worker] = c;
        enumerate(s, worker + 1, c);
    }
}

/* Number of non-decreasing sequences of k cuts from m allowed positions:
 * C(m + k - 1, k), saturating. */
static double plan_count(int m, int k)
{
    double n = 1;
    for (int i = 1; i <= k; i++)
        n = n * (m + i - 1) / i;
    return n;
}

long ds_sched_optimal(const ds_cost_model *cm, const int *allowed, const double *full_bytes,
                      const double *dif_bytes, int n_frames, int first_full, long max_plans,
                      ds_plan *best, ds_sim_result *best_result, ds_error *err)
{
    int positions = 0;
    for (int l = 0; l < cm->n_layers; l++)
        positions += l == 0 || l == cm->n_layers - 1 || !allowed || allowed[l];
    double count = plan_count(positions, cm->n_workers - 1);
    if (count > (double)max_plans)
        return ds_errorf(err, "opt: %.0f plans of %d workers over %d cut points exceed the limit of %ld",
                         count, cm->n_workers, positions, max_plans);
    search s;
    memset(&s, 0, sizeof s);
    s.cm = cm;
    s.allowed = allowed;
    s.full = full_bytes;
    s.dif = dif_bytes;
    s.n_frames = n_frames;
    s.first_full = first_full;
    s.max_plans = max_plans;
    s.cur.n_workers = cm->n_workers;
    enumerate(&s, 0, 0);
    *best = s.best;
    *best_result = s.best_result;
    return s.evaluated;
}

/* The original's neighbourhood search (its NSCScheduler.optimize_chain):
 * the workers on either side of the link with the largest total transfer
 * time split their layers anew at every legal cut (the left worker keeps at
 * least one layer, as in the original); the best split wins, and the search
 * repeats while the simulated time improves.  Moving the cut one layer at a
 * time instead stalls where a neighbouring layer's tensor is larger than the
 * current one (a pooling layer's output is smaller than both neighbours:
 * AlexNet's load-balanced cut after its second MaxPool stays there).
 *
 * One deliberate difference: the original picks the link once, from the
 * start plan's transfer times, so it re-splits a single link; here the link
 * is picked anew from the current plan each round.  With two workers there
 * is one link and the two are identical. */
void ds_sched_nsc(const ds_cost_model *cm, const int *allowed, const double *full_bytes,
                  const double *dif_bytes, int n_frames, int first_full, const ds_plan *start,
                  ds_plan *best, ds_sim_result *best_result)
{
    const int last = cm->n_layers - 1;
    ds_plan cur = *start;
    ds_sim_result r;
    ds_cost_simulate(cm, &cur, full_bytes, dif_bytes, n_frames, first_full, &r);
    for (int iter = 0; iter < cm->n_layers * cm->n_workers; iter++) {
        /* The link with the largest total transfer time whose two workers
         * hold layers between them (link 0 has no cut of its own to move:
         * the input always goes to worker 0). */
        int worst = -1;
        double worst_t = -1;
        for (int i = 1; i < cm->n_workers; i++) {
            int lo = i >= 2 ? cur.cut[i - 2] : 0;
            if (cur.cut[i] > lo && r.stage_busy[2 * i] > worst_t) {
                worst_t = r.stage_busy[2 * i];
                worst = i;
            }
        }
        if (worst < 0)
            break;
        /* Cut k separates worker k (left of the link) from worker k + 1. */
        int k = worst - 1, lo = k ? cur.cut[k - 1] : 0, hi = cur.cut[k + 1];
        ds_plan best_cand = cur;
        ds_sim_result best_cr = r;
        for (int c = lo + 1; c <= hi; c++) {
            if (c == cur.cut[k] || (c != hi && c != last && allowed && !allowed[c]))
                continue;
            ds_plan cand = cur;
            cand.cut[k] = c;
            ds_sim_result cr;
            ds_cost_simulate(cm, &cand, full_bytes, dif_bytes, n_frames, first_full, &cr);
            if (better(&cr, &best_cr)) {
                best_cand = cand;
                best_cr = cr;
            }
        }
        if (!better(&best_cr, &r))
            break;
        cur = best_cand;
        r = best_cr;
    }
    *best = cur;
    *best_result = r;
}

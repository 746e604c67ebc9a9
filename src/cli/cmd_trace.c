/* cmd_trace.c - deltaslice trace: per-service trace files -> one timeline
 * (Chrome trace-event JSON or an SVG Gantt chart), see timeline/timeline.h. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "timeline/timeline.h"

#define SHOWN_WARNINGS 10

typedef struct warn_state {
    long count;
    int quiet;
} warn_state;

static void on_warn(void *ctx, const char *msg)
{
    warn_state *w = ctx;
    if (!w->quiet && w->count < SHOWN_WARNINGS)
        fprintf(stderr, "deltaslice trace: warning: %s\n", msg);
    w->count++;
}

static const char *extension(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    return dot ? dot + 1 : "";
}

static const char help[] =
    "usage: deltaslice trace FILE.tc... -o OUT.json|OUT.svg [options]\n"
    "\n"
    "Merges the per-service trace files (trace_dir/<service>.tc of the master,\n"
    "the workers and the trainer) into one timeline of the chain: a track per\n"
    "stage in chain order (m, m→w0, w0, w0→w1, w1, ..., wK→m), each frame's\n"
    "stages as slices labelled with the frame id.  Files from other hosts are\n"
    "moved onto the master's clock with their '# clock' offset lines.\n"
    "  .json  Chrome trace-event format: open in https://ui.perfetto.dev or\n"
    "         chrome://tracing\n"
    "  .svg   a static Gantt chart (a colour per frame, time axis in seconds)\n"
    "\n"
    "options:\n"
    "  -o, --output FILE  the timeline to write; its extension picks the format\n"
    "      --format F     json or svg, whatever the extension\n"
    "      --no-align     keep every file on its own clock\n"
    "  -q, --quiet        no warnings about unpaired events\n"
    "  -h, --help         show this help\n"
    "      --version      show the version\n";

/* The command line. */
typedef struct trace_args {
    const char *out;
    int svg, align;
} trace_args;

/* Parses and checks the command line; returns -1 when the command is to
 * run, else the exit status (help, version, usage error). */
static int parse_args(int argc, char **argv, trace_args *a, warn_state *warns)
{
    static const struct option longs[] = {
        {"output", required_argument, NULL, 'o'},
        {"format", required_argument, NULL, 'f'},
        {"no-align", no_argument, NULL, 'A'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *format = NULL;
    *a = (trace_args){.align = 1};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->out = optarg;
            break;
        case 'f':
            format = optarg;
            break;
        case 'A':
            a->align = 0;
            break;
        case 'q':
            warns->quiet = 1;
            break;
        default:
            return ds_cli_common_option(c, argv[0], help, argv);
        }
    }
    if (!a->out)
        return ds_cli_usage_error(argv[0], "missing -o/--output OUT.json|OUT.svg");
    if (optind >= argc)
        return ds_cli_usage_error(argv[0], "no trace files given");
    if (!format)
        format = extension(a->out);
    a->svg = !strcmp(format, "svg");
    if (!a->svg && strcmp(format, "json"))
        return ds_cli_usage_error(argv[0], "cannot tell the format of '%s': use a .json or .svg "
                                  "name, or --format json|svg", a->out);
    return -1;
}

/* Reads the files, builds the timeline and writes it to a->out (removed
 * again on a write error). */
static int merge(ds_timeline *tl, char **files, int n_files, const trace_args *a, ds_error *err)
{
    for (int i = 0; i < n_files; i++)
        if (ds_timeline_add_file(tl, files[i], err))
            return -1;
    if (ds_timeline_build(tl, a->align, err))
        return -1;
    FILE *f = fopen(a->out, "w");
    if (!f)
        return ds_errorf(err, "%s: cannot write: %s", a->out, strerror(errno));
    if ((a->svg ? ds_timeline_write_svg : ds_timeline_write_json)(tl, f, err)) {
        ds_error_prefix(err, "%s", a->out);
        fclose(f);
        remove(a->out);
        return -1;
    }
    if (fclose(f))
        return ds_errorf(err, "%s: write failed: %s", a->out, strerror(errno));
    return 0;
}

/* One line for the whole timeline, then the clock shifts applied, so that
 * a wrong offset is easy to spot. */
static void print_summary(const ds_timeline *tl, const char *out, int n_files)
{
    size_t n = ds_timeline_n_slices(tl);
    int64_t t0 = INT64_MAX, t1 = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        const ds_tm_slice *s = ds_timeline_slice(tl, i);
        t0 = s->start_us < t0 ? s->start_us : t0;
        t1 = s->end_us > t1 ? s->end_us : t1;
    }
    printf("%s: %d file%s, %zu slices on %d tracks over %.3f s\n", out, n_files,
           n_files == 1 ? "" : "s", n, ds_timeline_n_tracks(tl), (double)(t1 - t0) / 1e6);
    for (int i = 0; i < ds_timeline_n_services(tl); i++) {
        int64_t shift;
        const char *name = ds_timeline_service(tl, i, &shift);
        if (shift)
            printf("  %s: %+.6f s to the master's clock\n", name, (double)shift / 1e6);
    }
}

int ds_cmd_trace(int argc, char **argv)
{
    trace_args a;
    warn_state warns = {0, 0};
    int rc = parse_args(argc, argv, &a, &warns);
    if (rc >= 0)
        return rc;
    ds_error err;
    ds_timeline *tl = ds_timeline_new(on_warn, &warns);
    if (!tl) {
        fprintf(stderr, "deltaslice trace: out of memory\n");
        return 1;
    }
    rc = 0;
    if (merge(tl, argv + optind, argc - optind, &a, &err)) {
        fprintf(stderr, "deltaslice trace: %s\n", err.msg);
        rc = 1;
    } else {
        if (warns.count > SHOWN_WARNINGS && !warns.quiet)
            fprintf(stderr, "deltaslice trace: %ld more warnings not shown\n",
                    warns.count - SHOWN_WARNINGS);
        print_summary(tl, a.out, argc - optind);
    }
    ds_timeline_free(tl);
    return rc;
}

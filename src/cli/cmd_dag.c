/* cmd_dag.c - deltaslice dag: the layer DAG as a Graphviz picture, with each
 * layer's id, op, output shape, FLOPs and measured time; articulation layers
 * (the legal single cut points) marked. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "engine/exec.h"
#include "engine/profile.h"
#include "model/model.h"

#define MAX_SIDE 16384
#define NAME_SHOWN 40 /* longest layer name drawn in a node */

/* "480x720" -> h, w in 1..MAX_SIDE. */
static int parse_size(const char *s, int *h, int *w)
{
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (errno || end == s || (*end != 'x' && *end != 'X') || a < 1 || a > MAX_SIDE)
        return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (errno || end == p || *end || b < 1 || b > MAX_SIDE)
        return -1;
    *h = (int)a;
    *w = (int)b;
    return 0;
}

/* Is there an executable NAME on PATH? */
static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n < sizeof dir - 64) {
            memcpy(dir, path, n);
            dir[n] = '\0';
            char full[4200];
            snprintf(full, sizeof full, "%s/%s", n ? dir : ".", name);
            struct stat st;
            if (!stat(full, &st) && S_ISREG(st.st_mode) && !access(full, X_OK))
                return 1;
        }
        path += n + (path[n] == ':');
    }
    return 0;
}

/* Writes s into a DOT double-quoted string, at most max characters of it. */
static void dot_str(FILE *f, const char *s, size_t max)
{
    size_t n = 0;
    for (; *s && n < max; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            fputc(c, f);
        else
            fputc('?', f); /* control bytes and broken UTF-8 would upset dot */
    }
    if (*s)
        fputs("...", f);
}

static void human(double v, const char *unit, char *out, size_t len)
{
    if (v >= 1e9)
        snprintf(out, len, "%.2f G%s", v / 1e9, unit);
    else if (v >= 1e6)
        snprintf(out, len, "%.1f M%s", v / 1e6, unit);
    else if (v >= 1e3)
        snprintf(out, len, "%.1f k%s", v / 1e3, unit);
    else
        snprintf(out, len, "%.0f %s", v, unit);
}

static void write_dot(FILE *f, const ds_model *m, const char *spec, int h, int w, const int *is_art,
                      int n_art, const ds_profile *prof, const char *prof_desc)
{
    double total_flops = 0;
    for (int i = 0; i < m->n_layers; i++)
        total_flops += ds_layer_flops(m, i);
    char tf[32];
    human(total_flops, "FLOP", tf, sizeof tf);
    fprintf(f, "digraph \"");
    dot_str(f, spec, 200);
    fprintf(f, "\" {\n"
               "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=12, labelloc=t, label=\"");
    dot_str(f, spec, 200);
    fprintf(f, " at %dx%d: %d layers, total %s", h, w, m->n_layers, tf);
    if (prof)
        fprintf(f, ", %.1f ms %s", prof->total * 1e3, prof_desc);
    fprintf(f, "\\n%d articulation layers (orange, double border): the legal single cut points\"];\n"
               "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", fontname=\"Helvetica\", "
               "fontsize=10];\n  edge [color=\"#666666\", arrowsize=0.6];\n", n_art);
    for (int i = 0; i < m->n_layers; i++) {
        const ds_layer *l = &m->layers[i];
        char shape[64], bytes[32], flops[32];
        ds_shape_str(&l->out_shape, shape, sizeof shape);
        human((double)ds_shape_numel(&l->out_shape) * 4, "B", bytes, sizeof bytes);
        human(ds_layer_flops(m, i), "FLOP", flops, sizeof flops);
        fprintf(f, "  L%d [label=\"%d: ", i, i);
        dot_str(f, l->name ? l->name : "?", NAME_SHOWN);
        fprintf(f, "\\n%s  %s (%s)\\n%s", ds_op_name(l->op), shape, bytes, flops);
        if (prof && prof->total > 0 && i > 0) {
            if (l->op == DS_OP_RELU && prof->seconds[i] == 0 && l->n_inputs == 1)
                fprintf(f, "  timed with %d", l->inputs[0]); /* fused into its conv */
            else
                fprintf(f, "  %.2f ms (%.1f%%)", prof->seconds[i] * 1e3,
                        100 * prof->seconds[i] / prof->total);
        }
        fprintf(f, "\"");
        if (is_art[i])
            fprintf(f, ", fillcolor=\"#ffcf87\", peripheries=2, penwidth=1.6, class=\"articulation\"");
        fprintf(f, "];\n");
    }
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_inputs; k++) {
            int j = m->layers[i].inputs[k];
            if (j >= 0 && j < m->n_layers)
                fprintf(f, "  L%d -> L%d;\n", j, i);
        }
    fprintf(f, "}\n");
}

/* Feeds text to `dot -Tsvg -o out`; returns 0 when dot succeeded. */
static int run_dot(const char *text, size_t len, const char *out)
{
    int fd[2];
    if (pipe(fd)) {
        fprintf(stderr, "deltaslice dag: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "deltaslice dag: fork: %s\n", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[0], 0);
        close(fd[0]);
        close(fd[1]);
        execlp("dot", "dot", "-Tsvg", "-o", out, (char *)NULL);
        fprintf(stderr, "deltaslice dag: cannot run dot: %s\n", strerror(errno));
        _exit(127);
    }
    close(fd[0]);
    /* dot may die early: get EPIPE instead of being killed by SIGPIPE. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd[1], text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd[1]);
    signal(SIGPIPE, old);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "deltaslice dag: waitpid: %s\n", strerror(errno));
            return -1;
        }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || done < len) {
        fprintf(stderr, "deltaslice dag: dot -Tsvg failed (%s %d)\n",
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -1;
    }
    return 0;
}

static const char dag_help[] =
    "usage: deltaslice dag MODEL -o OUT.svg|OUT.dot [options]\n"
    "\n"
    "Draws the model's layer DAG with Graphviz.  Each node shows the layer id\n"
    "and name, op, output shape (bytes as float32), FLOPs and, from a quick\n"
    "profile, the measured time and its share of the total.  Articulation\n"
    "layers - those every input-to-output path passes through, the legal\n"
    "single cut points - are orange with a double border: never inside a\n"
    "residual or squeeze-excite block, whose input also reaches its end.\n"
    "MODEL is zoo:NAME ('deltaslice zoo --list') or an .onnx file.\n"
    "  .dot  Graphviz source, written directly\n"
    "  .svg  rendered by 'dot -Tsvg' (the graphviz package)\n"
    "\n"
    "options:\n"
    "  -o, --output FILE    the picture; its extension picks the format\n"
    "  -s, --size HxW       input frame size (default 480x720)\n"
    "  -r, --runs N         profile runs after a warm-up, median taken\n"
    "                       (default 3; 0 = FLOPs only, no profile)\n"
    "  -t, --threads N      threads for the profile (default 1)\n"
    "  -b, --backend NAME   xnnpack (default) or reference\n"
    "  -h, --help           show this help\n"
    "      --version        show the version\n";

typedef struct dag_opts {
    const char *spec, *out;
    int h, w, runs, threads;
    int svg; /* else .dot */
    ds_backend be;
} dag_opts;

/* Options into o: -1 to go on, else the exit status (help, usage error). */
static int parse_args(int argc, char **argv, dag_opts *o)
{
    static const struct option longs[] = {
        {"output", required_argument, NULL, 'o'},  {"size", required_argument, NULL, 's'},
        {"runs", required_argument, NULL, 'r'},    {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
    };
    *o = (dag_opts){.h = 480, .w = 720, .runs = 3, .threads = 1, .be = DS_BACKEND_XNNPACK};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:s:r:t:b:h", longs, NULL)) != -1) {
        switch (c) {
        case 'o':
            o->out = optarg;
            break;
        case 's':
            if (parse_size(optarg, &o->h, &o->w))
                return ds_cli_usage_error(argv[0], "--size wants HxW with sides 1..%d, got '%s'",
                                          MAX_SIDE, optarg);
            break;
        case 'r':
        case 't': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            long lo = c == 'r' ? 0 : 1, hi = c == 'r' ? 1000 : 256;
            if (errno || end == optarg || *end || v < lo || v > hi)
                return ds_cli_usage_error(argv[0], "--%s wants %ld..%ld, got '%s'",
                                          c == 'r' ? "runs" : "threads", lo, hi, optarg);
            *(c == 'r' ? &o->runs : &o->threads) = (int)v;
            break;
        }
        case 'b':
            if (ds_backend_parse(optarg, &o->be))
                return ds_cli_usage_error(argv[0], "--backend is xnnpack or reference, not '%s'", optarg);
            break;
        default:
            return ds_cli_common_option(c, argv[0], dag_help, argv);
        }
    }
    if (optind != argc - 1)
        return ds_cli_usage_error(argv[0], "expected exactly one MODEL argument");
    if (!o->out)
        return ds_cli_usage_error(argv[0], "missing -o/--output OUT.svg|OUT.dot");
    o->spec = argv[optind];
    const char *slash = strrchr(o->out, '/');
    const char *ext = strrchr(slash ? slash : o->out, '.');
    o->svg = ext && !strcmp(ext, ".svg");
    if (!o->svg && !(ext && !strcmp(ext, ".dot")))
        return ds_cli_usage_error(argv[0], "cannot tell the format of '%s': use a .svg or .dot name", o->out);
    return -1;
}

/* The DOT text to o->out: rendered by dot for .svg, as is for .dot. */
static int write_output(const char *text, size_t len, const dag_opts *o)
{
    if (o->svg) {
        if (run_dot(text, len, o->out)) {
            remove(o->out);
            return -1;
        }
        return 0;
    }
    FILE *f = fopen(o->out, "w");
    int bad = !f;
    if (f) {
        bad = fwrite(text, 1, len, f) != len;
        bad |= fclose(f) != 0;
    }
    if (bad) {
        fprintf(stderr, "deltaslice dag: cannot write %s: %s\n", o->out, strerror(errno));
        if (f)
            remove(o->out);
        return -1;
    }
    return 0;
}

static int draw(const ds_model *m, const dag_opts *o, const int *is_art, int n_art,
                const ds_profile *prof, const char *prof_desc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        fprintf(stderr, "deltaslice dag: out of memory\n");
        return -1;
    }
    write_dot(f, m, o->spec, o->h, o->w, is_art, n_art, prof, prof_desc);
    int rc = -1;
    if (fclose(f))
        fprintf(stderr, "deltaslice dag: out of memory\n");
    else
        rc = write_output(text, len, o);
    free(text);
    return rc;
}

/* is_art[i] = 1 for the articulation layers; returns their count, -1 when
 * out of memory. */
static int mark_articulations(const ds_model *m, int *is_art)
{
    int *art = malloc((size_t)m->n_layers * sizeof *art);
    if (!art) {
        fprintf(stderr, "deltaslice dag: out of memory\n");
        return -1;
    }
    int n_art = ds_model_articulations(m, art);
    for (int i = 0; i < n_art; i++)
        if (art[i] >= 0 && art[i] < m->n_layers)
            is_art[art[i]] = 1;
    free(art);
    return n_art;
}

/* Profiles m as o says; prof_desc describes how. */
static int profile(const ds_model *m, const dag_opts *o, ds_profile *prof, char *prof_desc, size_t len)
{
    ds_error err;
    if (ds_profile_model(m, o->be, o->threads, o->runs, isatty(2), prof, &err)) {
        fprintf(stderr, "deltaslice dag: profiling %s: %s\n", o->spec, err.msg);
        return -1;
    }
    if (prof->n_layers != m->n_layers) {
        fprintf(stderr, "deltaslice dag: profile has %d layers, model %d\n", prof->n_layers, m->n_layers);
        ds_profile_free(prof);
        return -1;
    }
    snprintf(prof_desc, len, "on %s, %d thread%s, median of %d run%s", ds_backend_name(o->be), o->threads,
             o->threads > 1 ? "s" : "", o->runs, o->runs > 1 ? "s" : "");
    return 0;
}

int ds_cmd_dag(int argc, char **argv)
{
    dag_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (o.svg && !on_path("dot")) {
        fprintf(stderr, "deltaslice dag: 'dot' (Graphviz) not found on PATH: install the graphviz "
                        "package (apt-get install graphviz), or write .dot and render it elsewhere\n");
        return 1;
    }
    ds_model m;
    memset(&m, 0, sizeof m);
    ds_profile prof;
    memset(&prof, 0, sizeof prof);
    int have_prof = 0, *is_art = NULL, n_art;
    char prof_desc[96] = "";
    ds_error err;
    rc = 1;
    if (ds_model_load(o.spec, &m, &err)) {
        fprintf(stderr, "deltaslice dag: %s\n", err.msg);
        goto done;
    }
    /* Channels as declared (3 for every zoo trunk). */
    int64_t ch = m.input_shape.ndim >= 2 && m.input_shape.dims[1] > 0 ? m.input_shape.dims[1] : 3;
    if (ds_model_set_input(&m, 1, ch, o.h, o.w, &err)) {
        fprintf(stderr, "deltaslice dag: %s at %dx%d: %s\n", o.spec, o.h, o.w, err.msg);
        goto done;
    }
    if (!(is_art = calloc((size_t)m.n_layers, sizeof *is_art))) {
        fprintf(stderr, "deltaslice dag: out of memory\n");
        goto done;
    }
    if ((n_art = mark_articulations(&m, is_art)) < 0)
        goto done;
    if (o.runs > 0 && profile(&m, &o, &prof, prof_desc, sizeof prof_desc))
        goto done;
    have_prof = o.runs > 0;
    if (draw(&m, &o, is_art, n_art, have_prof ? &prof : NULL, prof_desc))
        goto done;
    printf("%s: %s at %dx%d, %d layers, %d articulation layers%s%s\n", o.out, o.spec, o.h, o.w, m.n_layers,
           n_art, have_prof ? ", profiled " : "", prof_desc);
    rc = 0;
done:
    free(is_art);
    if (have_prof)
        ds_profile_free(&prof);
    ds_model_free(&m);
    return rc;
}

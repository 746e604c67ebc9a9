/* zoo.c - the zoo's catalogue (see zoo.h) and the trunks of the reference
 * system: alexnet, vgg16/19, googlenet, resnet50.  Other families live in
 * zoo_*.c files of their own; all are written with zoo_build.h. */
#include <stdio.h>
#include <string.h>

#include "model/zoo.h"
#include "model/zoo_build.h"

/* torchvision BasicConv2d: conv (no bias) + BN(eps 1e-3) + relu.  Writes
 * the relu's name into out. */
static void basic_conv(ds_zb *b, const char *prefix, const char *in, int cin, int cout, int k, int s, int p,
                       char *out, size_t outlen)
{
    char c[DS_ZB_NAME], bn[DS_ZB_NAME];
    ds_zb_join(c, sizeof c, prefix, ".conv");
    ds_zb_join(bn, sizeof bn, prefix, ".bn");
    ds_zb_join(out, outlen, prefix, ".relu");
    ds_zb_conv(b, c, in, cin, cout, k, s, p, 1, 0);
    ds_zb_batchnorm(b, bn, c, cout, 1e-3f);
    ds_zb_unary(b, "Relu", out, bn);
}

/* ---- the trunks -------------------------------------------------------- */

/* Writes the last layer's output name into last. */
static void build_alexnet(ds_zb *b)
{
    ds_zb_conv(b, "features.0", "input", 3, 64, 11, 4, 2, 1, 1);
    ds_zb_unary(b, "Relu", "features.1", "features.0");
    ds_zb_pool(b, "MaxPool", "features.2", "features.1", 3, 2, 0, 0);
    ds_zb_conv(b, "features.3", "features.2", 64, 192, 5, 1, 2, 1, 1);
    ds_zb_unary(b, "Relu", "features.4", "features.3");
    ds_zb_pool(b, "MaxPool", "features.5", "features.4", 3, 2, 0, 0);
    ds_zb_conv(b, "features.6", "features.5", 192, 384, 3, 1, 1, 1, 1);
    ds_zb_unary(b, "Relu", "features.7", "features.6");
    ds_zb_conv(b, "features.8", "features.7", 384, 256, 3, 1, 1, 1, 1);
    ds_zb_unary(b, "Relu", "features.9", "features.8");
    ds_zb_conv(b, "features.10", "features.9", 256, 256, 3, 1, 1, 1, 1);
    ds_zb_unary(b, "Relu", "features.11", "features.10");
    ds_zb_pool(b, "MaxPool", "features.12", "features.11", 3, 2, 0, 0);
    ds_zb_output(b, "features.12", 256);
}

/* cfg: channel counts, 0 = maxpool 2/2. */
static void build_vgg(ds_zb *b, const int *cfg, int n)
{
    char prev[32] = "input", cur[32];
    int ch = 3, idx = 0;
    for (int i = 0; i < n; i++) {
        snprintf(cur, sizeof cur, "features.%d", idx++);
        if (cfg[i] == 0) {
            ds_zb_pool(b, "MaxPool", cur, prev, 2, 2, 0, 0);
        } else {
            ds_zb_conv(b, cur, prev, ch, cfg[i], 3, 1, 1, 1, 1);
            ch = cfg[i];
            char relu[32];
            snprintf(relu, sizeof relu, "features.%d", idx++);
            ds_zb_unary(b, "Relu", relu, cur);
            snprintf(cur, sizeof cur, "%s", relu);
        }
        snprintf(prev, sizeof prev, "%s", cur);
    }
    ds_zb_output(b, prev, ch);
}

static void inception(ds_zb *b, const char *name, const char *in, int cin, int c1, int c3r, int c3, int c5r, int c5,
                      int pp, char *out, size_t outlen)
{
    char p[DS_ZB_NAME], o1[DS_ZB_NAME], t[DS_ZB_NAME], o2[DS_ZB_NAME], o3[DS_ZB_NAME], mp[DS_ZB_NAME], o4[DS_ZB_NAME];
    ds_zb_join(p, sizeof p, name, ".branch1");
    basic_conv(b, p, in, cin, c1, 1, 1, 0, o1, sizeof o1);
    ds_zb_join(p, sizeof p, name, ".branch2.0");
    basic_conv(b, p, in, cin, c3r, 1, 1, 0, t, sizeof t);
    ds_zb_join(p, sizeof p, name, ".branch2.1");
    basic_conv(b, p, t, c3r, c3, 3, 1, 1, o2, sizeof o2);
    ds_zb_join(p, sizeof p, name, ".branch3.0");
    basic_conv(b, p, in, cin, c5r, 1, 1, 0, t, sizeof t);
    /* torchvision's known quirk: a 3x3 conv where the paper has 5x5. */
    ds_zb_join(p, sizeof p, name, ".branch3.1");
    basic_conv(b, p, t, c5r, c5, 3, 1, 1, o3, sizeof o3);
    ds_zb_join(mp, sizeof mp, name, ".branch4.0");
    ds_zb_pool(b, "MaxPool", mp, in, 3, 1, 1, 1);
    ds_zb_join(p, sizeof p, name, ".branch4.1");
    basic_conv(b, p, mp, cin, pp, 1, 1, 0, o4, sizeof o4);
    ds_zb_join(out, outlen, name, ".concat");
    const char *inputs[4] = {o1, o2, o3, o4};
    ds_zb_concat(b, out, 4, inputs);
}

static void build_googlenet(ds_zb *b)
{
    char x[DS_ZB_NAME], y[DS_ZB_NAME];
    basic_conv(b, "conv1", "input", 3, 64, 7, 2, 3, x, sizeof x);
    ds_zb_pool(b, "MaxPool", "maxpool1", x, 3, 2, 0, 1);
    basic_conv(b, "conv2", "maxpool1", 64, 64, 1, 1, 0, x, sizeof x);
    basic_conv(b, "conv3", x, 64, 192, 3, 1, 1, y, sizeof y);
    ds_zb_pool(b, "MaxPool", "maxpool2", y, 3, 2, 0, 1);
    static const struct {
        const char *name;
        int cin, c1, c3r, c3, c5r, c5, pp;
        const char *pool_after; /* maxpool following this block */
        int pk;
    } blocks[] = {
        {"inception3a", 192, 64, 96, 128, 16, 32, 32, NULL, 0},
        {"inception3b", 256, 128, 128, 192, 32, 96, 64, "maxpool3", 3},
        {"inception4a", 480, 192, 96, 208, 16, 48, 64, NULL, 0},
        {"inception4b", 512, 160, 112, 224, 24, 64, 64, NULL, 0},
        {"inception4c", 512, 128, 128, 256, 24, 64, 64, NULL, 0},
        {"inception4d", 512, 112, 144, 288, 32, 64, 64, NULL, 0},
        {"inception4e", 528, 256, 160, 320, 32, 128, 128, "maxpool4", 2},
        {"inception5a", 832, 256, 160, 320, 32, 128, 128, NULL, 0},
        {"inception5b", 832, 384, 192, 384, 48, 128, 128, NULL, 0},
    };
    snprintf(x, sizeof x, "maxpool2");
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        inception(b, blocks[i].name, x, blocks[i].cin, blocks[i].c1, blocks[i].c3r, blocks[i].c3, blocks[i].c5r,
                  blocks[i].c5, blocks[i].pp, y, sizeof y);
        if (blocks[i].pool_after) {
            ds_zb_pool(b, "MaxPool", blocks[i].pool_after, y, blocks[i].pk, 2, 0, 1);
            snprintf(y, sizeof y, "%s", blocks[i].pool_after);
        }
        snprintf(x, sizeof x, "%s", y);
    }
    ds_zb_output(b, x, 1024);
}

static void bottleneck(ds_zb *b, const char *name, const char *in, int cin, int planes, int stride, int downsample,
                       char *out, size_t outlen)
{
    char c1[DS_ZB_NAME], b1[DS_ZB_NAME], r1[DS_ZB_NAME], c2[DS_ZB_NAME], b2[DS_ZB_NAME], r2[DS_ZB_NAME], c3[DS_ZB_NAME], b3[DS_ZB_NAME], d0[DS_ZB_NAME], d1[DS_ZB_NAME], add[DS_ZB_NAME];
    ds_zb_join(c1, sizeof c1, name, ".conv1");
    ds_zb_join(b1, sizeof b1, name, ".bn1");
    ds_zb_join(r1, sizeof r1, name, ".relu1");
    ds_zb_join(c2, sizeof c2, name, ".conv2");
    ds_zb_join(b2, sizeof b2, name, ".bn2");
    ds_zb_join(r2, sizeof r2, name, ".relu2");
    ds_zb_join(c3, sizeof c3, name, ".conv3");
    ds_zb_join(b3, sizeof b3, name, ".bn3");
    ds_zb_join(d0, sizeof d0, name, ".downsample.0");
    ds_zb_join(d1, sizeof d1, name, ".downsample.1");
    ds_zb_join(add, sizeof add, name, ".add");
    ds_zb_join(out, outlen, name, ".relu3");
    ds_zb_conv(b, c1, in, cin, planes, 1, 1, 0, 1, 0);
    ds_zb_batchnorm(b, b1, c1, planes, 1e-5f);
    ds_zb_unary(b, "Relu", r1, b1);
    ds_zb_conv(b, c2, r1, planes, planes, 3, stride, 1, 1, 0);
    ds_zb_batchnorm(b, b2, c2, planes, 1e-5f);
    ds_zb_unary(b, "Relu", r2, b2);
    ds_zb_conv(b, c3, r2, planes, planes * 4, 1, 1, 0, 1, 0);
    ds_zb_batchnorm(b, b3, c3, planes * 4, 1e-5f);
    const char *identity = in;
    if (downsample) {
        ds_zb_conv(b, d0, in, cin, planes * 4, 1, stride, 0, 1, 0);
        ds_zb_batchnorm(b, d1, d0, planes * 4, 1e-5f);
        identity = d1;
    }
    const char *inputs[2] = {b3, identity};
    ds_zb_node(b, "Add", add, 2, inputs);
    ds_zb_unary(b, "Relu", out, add);
}

static void build_resnet50(ds_zb *b)
{
    ds_zb_conv(b, "conv1", "input", 3, 64, 7, 2, 3, 1, 0);
    ds_zb_batchnorm(b, "bn1", "conv1", 64, 1e-5f);
    ds_zb_unary(b, "Relu", "relu", "bn1");
    ds_zb_pool(b, "MaxPool", "maxpool", "relu", 3, 2, 1, 0);
    static const int blocks[4] = {3, 4, 6, 3};
    char x[DS_ZB_NAME] = "maxpool", y[DS_ZB_NAME], name[64];
    int cin = 64;
    for (int s = 0; s < 4; s++) {
        int planes = 64 << s;
        for (int i = 0; i < blocks[s]; i++) {
            snprintf(name, sizeof name, "layer%d.%d", s + 1, i);
            bottleneck(b, name, x, cin, planes, i == 0 && s > 0 ? 2 : 1, i == 0, y, sizeof y);
            cin = planes * 4;
            snprintf(x, sizeof x, "%s", y);
        }
    }
    ds_zb_output(b, x, cin);
}

static void build_vgg16(ds_zb *b)
{
    static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
    build_vgg(b, cfg, (int)(sizeof cfg / sizeof cfg[0]));
}

static void build_vgg19(ds_zb *b)
{
    static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0,
                              512, 512, 512, 512, 0, 512, 512, 512, 512, 0};
    build_vgg(b, cfg, (int)(sizeof cfg / sizeof cfg[0]));
}

/* ---- the catalogue ----------------------------------------------------- */

static const struct {
    const char *name;
    ds_zb_trunk *build;
} catalogue[] = {
    {"alexnet", build_alexnet},
    {"vgg16", build_vgg16},
    {"vgg19", build_vgg19},
    {"googlenet", build_googlenet},
    {"resnet50", build_resnet50},
};
#define N_MODELS (sizeof catalogue / sizeof catalogue[0])

const char *const *ds_zoo_names(void)
{
    static const char *names[N_MODELS + 1];
    for (size_t i = 0; i < N_MODELS; i++)
        names[i] = catalogue[i].name;
    return names;
}

int ds_zoo_build(const char *name, uint64_t seed, uint8_t **onnx_bytes, size_t *len, ds_error *err)
{
    *onnx_bytes = NULL;
    *len = 0;
    for (size_t i = 0; name && i < N_MODELS; i++)
        if (!strcmp(name, catalogue[i].name))
            return ds_zb_build(name, catalogue[i].build, seed, onnx_bytes, len, err);
    char known[512] = "";
    for (size_t i = 0; i < N_MODELS; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", catalogue[i].name);
    return ds_errorf(err, "zoo: unknown model \"%.60s\" (known: %s)", name ? name : "", known);
}

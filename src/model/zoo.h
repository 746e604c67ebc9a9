/* zoo.h - the built-in CNN trunks, written as ONNX with deterministic random
 * weights, so that no machine ever downloads weights.
 *
 * Each has torchvision's layer structure, names and shapes: alexnet
 * (AlexNet.features), vgg16 and vgg19 (features), googlenet (conv1 ..
 * inception5b, no aux heads or fc; BasicConv2d = Conv(no bias) + BN(eps 1e-3) +
 * Relu; torchvision's 3x3 in branch 3), resnet50 (conv1 .. layer4, v1.5 with
 * the stride on the 3x3 conv).  Files are opset 13, IR version 7, with one
 * input "input" of 1 x 3 x H x W (H, W symbolic).  Weights are He-initialised
 * (normal(0, sqrt(2 / fan_in))) from a splitmix64 stream seeded by `seed`;
 * conv biases are small uniform; BN parameters mildly random around the
 * identity.  The same name and seed give the same bytes on every machine. */
#ifndef DS_ZOO_H
#define DS_ZOO_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Builds model NAME into *onnx_bytes (malloc'd, caller frees) of *len
 * bytes.  Fails on an unknown name (listing the known ones). */
int ds_zoo_build(const char *name, uint64_t seed, uint8_t **onnx_bytes, size_t *len, ds_error *err);

/* The known names, NULL-terminated. */
const char *const *ds_zoo_names(void);

#endif

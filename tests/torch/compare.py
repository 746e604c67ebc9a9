#!/usr/bin/python3
"""Exports small PyTorch models to ONNX, runs them with `deltaslice infer`
and compares with PyTorch's own answer (within 1e-5 of the output's largest
magnitude). Needs Debian's python3-torch and python3-onnx (not installed by
the set-up: torch is large); exits 77 (skip) without them.

usage: compare.py DELTASLICE_BIN WORKDIR"""
import os
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore")

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)


class Inception(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(c, 8, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU())
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(c, 8, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.conv(x))


def models():
    yield "alexnet_like", nn.Sequential(
        nn.Conv2d(3, 16, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 24, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(24, 24, 3, padding=1, dilation=1), nn.ReLU()), (1, 3, 96, 128)
    yield "inception_like", nn.Sequential(
        nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), Inception(16),
        nn.AvgPool2d(3, 2, 1, count_include_pad=False), Inception(24)), (1, 3, 64, 96)
    yield "resnet_like", nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), Residual(16), Residual(16), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10), nn.Softmax(dim=1)), (1, 3, 48, 64)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    worst = 0.0
    for name, model, shape in models():
        model.eval()
        for m in model.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
        x = torch.rand(shape)
        path = os.path.join(work, name + ".onnx")
        torch.onnx.export(model, x, path, opset_version=13, input_names=["input"])
        with torch.no_grad():
            want = model(x).numpy()
        inp, out = os.path.join(work, name + ".in"), os.path.join(work, name + ".out")
        x.numpy().astype("<f4").tofile(inp)
        shape_text = "x".join(map(str, shape))
        r = subprocess.run([binary, "infer", path, "--input", inp, "--shape", shape_text, "--output", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: {name}: infer exited {r.returncode}: {r.stderr.strip()}")
            return 1
        got = np.fromfile(out, dtype="<f4")
        if got.size != want.size:
            print(f"FAIL: {name}: {got.size} values, PyTorch gives {want.size} ({r.stdout.strip()})")
            return 1
        err = float(np.max(np.abs(got - want.ravel())) / np.max(np.abs(want)))
        worst = max(worst, err)
        print(f"{name}: output {r.stdout.strip()}, max error {err:.2e} of the largest magnitude")
        if err > 1e-5:
            print(f"FAIL: {name}: error {err:.2e} above 1e-5")
            return 1
    print(f"torch: all models match PyTorch (worst {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""ResNet-18/50 (224x224) and ResNet-20 CIFAR throughput: ModelGate's engine beside ONNX Runtime
on the same seeded random weights, in one run. Prints one JSON line per model and batch size.

    bench/resnet.py [seconds]      (run through bench/run resnet; needs the release bench binary,
                                    torch/torchvision and onnxruntime in the Python environment)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from make_resnet_fixtures import CifarResNet, randomise_batch_norm  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 8


def ort_rate(path, batch, size):
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)
    session.run(None, {"input": x})
    images, start = 0, time.time()
    while time.time() - start < SECONDS or images == 0:
        session.run(None, {"input": x})
        images += batch
    return images / (time.time() - start)


def ours(weights, batch, size):
    out = subprocess.check_output([os.path.join(ROOT, ".build", "release", "modelgate-bench"), "resnet", "--weights", weights,
                                   "--batch", str(batch), "--size", str(size), "--seconds", str(SECONDS)])
    return json.loads(out.decode().strip().splitlines()[-1])["images_per_second"]


def main():
    torch.manual_seed(0)
    work = tempfile.mkdtemp(prefix="modelgate-bench-resnet-")
    cases = [("ResNet-18", torchvision.models.resnet18(), 224, [1, 8]),
             ("ResNet-50", torchvision.models.resnet50(), 224, [1, 8]),
             ("ResNet-20 (CIFAR)", CifarResNet(3), 32, [64])]
    for name, model, size, batches in cases:
        randomise_batch_norm(model)
        model.eval()
        weights = os.path.join(work, name.split()[0] + ".safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
        onnx_path = os.path.join(work, name.split()[0] + ".onnx")
        torch.onnx.export(model, torch.zeros(1, 3, size, size), onnx_path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}}, opset_version=13)
        for batch in batches:
            mine = ours(weights, batch, size)
            theirs = ort_rate(onnx_path, batch, size)
            print(json.dumps({"benchmark": "resnet", "model": name, "batch": batch, "images_per_second": mine,
                              "onnxruntime_images_per_second": round(theirs, 1), "ratio_vs_onnxruntime": round(mine / theirs, 2),
                              "onnxruntime_version": ort.__version__}),
                  flush=True)


if __name__ == "__main__":
    main()

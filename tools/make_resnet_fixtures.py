#!/usr/bin/env python3
"""Reference fixtures for the ResNet engine and image decoding, from PyTorch/torchvision/PIL.

Writes Tests/InferenceTests/Fixtures/resnet/:
  - tiny-basic/, tiny-bottleneck/, tiny-cifar/: random models with torchvision's (or akamaster's
    CIFAR) state-dict names, narrow widths, random batch-norm statistics; model.safetensors.
  - images/: small JPEG/PNG test images; reference.json holds, per image, torchvision's
    preprocessing of it and each model's logits for that preprocessed input.
  - decode/: one tiny file per supported variant and per failure, with the expected RGB pixels
    (PIL, i.e. libjpeg's output, for JPEG; the generating arrays for PNG).

    /opt/venv-ref/bin/python tools/make_resnet_fixtures.py
"""
import io
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "InferenceTests", "Fixtures", "resnet")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """torchvision.models.ResNet with configurable widths (same state-dict names)."""

    def __init__(self, block, layers, widths, classes):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(block, widths[0], layers[0], 1)
        self.layer2 = self._make(block, widths[1], layers[1], 2)
        self.layer3 = self._make(block, widths[2], layers[2], 2)
        self.layer4 = self._make(block, widths[3], layers[3], 2)
        self.fc = nn.Linear(widths[3] * block.expansion, classes)

    def _make(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class CifarBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or inplanes != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """akamaster/pytorch_resnet_cifar10 (option A shortcuts)."""

    def __init__(self, n, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for index, width in enumerate([16, 32, 64]):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and index > 0) else 1
                blocks.append(CifarBlock(planes, width, stride))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomise_batch_norm(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)


def save_model(model, name):
    directory = os.path.join(OUT, name)
    os.makedirs(directory, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, os.path.join(directory, "model.safetensors"))


def preprocess(image, resize, crop):
    tensor = TF.pil_to_tensor(image)  # uint8 CHW
    if resize is not None:
        tensor = TF.resize(tensor, resize, antialias=True)
    tensor = TF.center_crop(tensor, crop)
    tensor = tensor.float() / 255
    return TF.normalize(tensor, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_images():
    rng = np.random.default_rng(7)
    images = {}
    y, x = np.mgrid[0:90, 0:120]
    gradient = np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)
    images["gradient.png"] = Image.fromarray(gradient)
    noise = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    images["noise.png"] = Image.fromarray(noise)
    checker = (((x // 10) + (y // 10)) % 2 * 255).astype(np.uint8)
    images["checker.jpg"] = Image.fromarray(np.stack([checker, 255 - checker, checker // 2], -1)[:80, :100])
    return images


def main():
    torch.manual_seed(99)
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    models = {
        "tiny-basic": (TorchvisionResNet(BasicBlock, [2, 2, 2, 2], [8, 16, 24, 32], 7), 72, 64),
        "tiny-bottleneck": (TorchvisionResNet(Bottleneck, [1, 2, 1, 1], [4, 8, 8, 16], 5), 72, 64),
        "tiny-cifar": (CifarResNet(2, 10), None, 32),
    }
    for name, (model, _, _) in models.items():
        randomise_batch_norm(model)
        model.eval()
        save_model(model, name)

    reference = {"images": []}
    for file, image in test_images().items():
        path = os.path.join(OUT, "images", file)
        if file.endswith(".jpg"):
            image.save(path, quality=90)
        else:
            image.save(path)
        decoded = Image.open(path).convert("RGB")
        entry = {"file": file, "models": {}}
        for name, (model, resize, crop) in models.items():
            tensor = preprocess(decoded, resize, crop)
            with torch.no_grad():
                logits = model(tensor.unsqueeze(0))[0]
            entry["models"][name] = {
                "resize": resize, "crop": crop,
                "input_hwc": [round(float(v), 6) for v in tensor.permute(1, 2, 0).flatten()],
                "logits": [round(float(v), 6) for v in logits],
            }
        reference["images"].append(entry)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(reference, f)

    # Decoding variants.
    decode = os.path.join(OUT, "decode")
    os.makedirs(decode, exist_ok=True)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    expected = {}

    def png(name, array, mode, **options):
        Image.fromarray(array, mode).save(os.path.join(decode, name), **options)

    png("rgb8.png", rgb, "RGB")
    expected["rgb8.png"] = rgb
    rgba = np.concatenate([rgb, rng.integers(0, 256, (6, 8, 1), dtype=np.uint8)], -1)
    png("rgba8.png", rgba, "RGBA")
    expected["rgba8.png"] = rgb  # alpha dropped
    gray = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    png("gray8.png", gray, "L")
    expected["gray8.png"] = np.stack([gray] * 3, -1)
    png("gray-alpha.png", np.stack([gray, gray // 2], -1), "LA")
    expected["gray-alpha.png"] = np.stack([gray] * 3, -1)
    palette = Image.fromarray(rgb, "RGB").quantize(colors=16)
    palette.save(os.path.join(decode, "palette.png"))
    expected["palette.png"] = np.array(palette.convert("RGB"))
    png("interlaced.png", rgb, "RGB", optimize=False)
    Image.fromarray(rgb, "RGB").save(os.path.join(decode, "interlaced.png"), interlace=1)
    expected["interlaced.png"] = rgb
    # 16-bit: written by hand (PIL cannot write 16-bit RGB); the decoder keeps the high byte.
    rgb16 = rng.integers(0, 65536, (6, 8, 3), dtype=np.uint16)
    write_png16(os.path.join(decode, "rgb16.png"), rgb16, color_type=2)
    expected["rgb16.png"] = (rgb16 >> 8).astype(np.uint8)
    gray16 = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    write_png16(os.path.join(decode, "gray16.png"), gray16, color_type=0)
    expected["gray16.png"] = np.stack([(gray16 >> 8).astype(np.uint8)] * 3, -1)

    smooth = np.stack(np.mgrid[0:16, 0:24], -1)
    smooth_rgb = np.concatenate([smooth * 10, smooth[..., :1] * 5], -1).astype(np.uint8)
    Image.fromarray(smooth_rgb).save(os.path.join(decode, "rgb.jpg"), quality=85)
    expected["rgb.jpg"] = np.array(Image.open(os.path.join(decode, "rgb.jpg")).convert("RGB"))
    Image.fromarray(smooth_rgb[..., 0]).save(os.path.join(decode, "gray.jpg"), quality=85)
    expected["gray.jpg"] = np.array(Image.open(os.path.join(decode, "gray.jpg")).convert("RGB"))
    # EXIF orientation 6 (rotate 90° clockwise to display).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_rgb).save(os.path.join(decode, "oriented6.jpg"), quality=85, exif=exif.tobytes())
    from PIL import ImageOps
    expected["oriented6.jpg"] = np.array(ImageOps.exif_transpose(Image.open(os.path.join(decode, "oriented6.jpg"))).convert("RGB"))

    data = open(os.path.join(decode, "rgb.jpg"), "rb").read()
    open(os.path.join(decode, "truncated.jpg"), "wb").write(data[: len(data) // 2])
    data = open(os.path.join(decode, "rgb8.png"), "rb").read()
    open(os.path.join(decode, "truncated.png"), "wb").write(data[: len(data) - 20])
    corrupt = bytearray(data)
    for i in range(40, 60):
        corrupt[i] ^= 0x5A
    open(os.path.join(decode, "corrupt.png"), "wb").write(bytes(corrupt))
    Image.fromarray(rgb).save(os.path.join(decode, "image.gif"))
    Image.fromarray(rgb).save(os.path.join(decode, "image.bmp"))
    # A decompression bomb: a valid header claiming 30000 x 30000 pixels.
    write_png_header_only(os.path.join(decode, "bomb.png"), 30000, 30000)

    with open(os.path.join(decode, "expected.json"), "w") as f:
        json.dump({name: {"width": int(a.shape[1]), "height": int(a.shape[0]), "rgb": a.astype(int).flatten().tolist()}
                   for name, a in expected.items()}, f)
    print("wrote", OUT)


def chunk(kind, payload):
    import zlib
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def write_png16(path, array, color_type):
    import zlib
    height, width = array.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


def write_png_header_only(path, width, height):
    import zlib
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 3)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * 4)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


if __name__ == "__main__":
    main()

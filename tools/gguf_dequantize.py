#!/usr/bin/env python3
"""Reads every tensor of a GGUF file back as float32 with llama.cpp's own gguf-py (its
`quants.dequantize`, numpy), and writes them one after another, in the file's tensor order, as
raw little-endian float32 to OUT. Prints one line per tensor: its name and type. The quantized
GGUF tests compare ModelGate's reading of each tensor with these floats, bit for bit.

    tools/gguf_dequantize.py MODEL.gguf OUT.f32
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main():
    source, target = sys.argv[1:3]
    reader = GGUFReader(source)
    with open(target, "wb") as out:
        for tensor in reader.tensors:
            values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
            out.write(np.ascontiguousarray(values).astype("<f4").tobytes())
            print(tensor.name, tensor.tensor_type.name)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Builds and runs check.c: the AVX-512 kernels (mg_f32.c's quantized products, mg_quant.c's
# VNNI products) on this CPU through scalar intrinsics, against their definition and the AVX2
# kernel. For a CPU without AVX-512, where the tests skip those variants.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernels=$here/../../Sources/CKernels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The VNNI kernel: mg_quant.c from its AVX-512 helpers to the dispatch.
sed -n '/^\/\/\/ 16 scales or offsets as floats/,/^void mg_quantized_integer_rows(/p' "$kernels/mg_quant.c" | sed '$d' > "$work/vnni_slice.c"
cc -O2 -c "$kernels/mg_quant.c" -I "$kernels/include" -I "$kernels" -o "$work/mg_quant.o"
cc -O2 -c "$kernels/mg_int8.c" -I "$kernels/include" -I "$kernels" -o "$work/mg_int8.o"
# target("avx512f") and the like become cold (harmless): nothing here may use instructions this CPU lacks.
cc -O2 -mavx2 -mfma -std=gnu11 -D'target(x)=cold' -I "$here" -I "$work" -I "$kernels/include" -I "$kernels" "$here/check.c" "$work/mg_quant.o" "$work/mg_int8.o" -lm -o "$work/check"
"$work/check"

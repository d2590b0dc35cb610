import Foundation
import Inference

/// GFLOP/s of OpenBLAS sgemm for skinny products (M tokens x weights), with a working set
/// larger than the caches (as in a real model).
enum GemmProbe {
    static func run() {
        BLAS.configureThreads()
        let k = 768, n = 3072
        let copies = 24  // ~226 MB of weights, cycled so they come from memory
        let weights = (0..<copies).map { _ -> FloatBuffer in
            let w = FloatBuffer(count: k * n)
            for i in stride(from: 0, to: k * n, by: 61) { w[i] = 0.01 }
            return w
        }
        for m in [1, 2, 4, 8, 16, 32, 128] {
            let x = FloatBuffer(count: m * k)
            let y = FloatBuffer(count: m * n)
            let iterations = 96
            let start = Date()
            for i in 0..<iterations { BLAS.matmul(x.pointer, weights[i % copies].pointer, y.pointer, m: m, k: k, n: n) }
            let elapsed = Date().timeIntervalSince(start) / Double(iterations)
            print("m \(m): \(String(format: "%.3f", elapsed * 1000)) ms, \(String(format: "%.1f", 2.0 * Double(m * k * n) / elapsed / 1e9)) GFLOP/s, \(String(format: "%.1f", Double(k * n * 4) / elapsed / 1e9)) GB/s of weights")
        }
    }
}

/// GFLOP/s of `PackedMatrix` beside OpenBLAS sgemm for the tall products of convolutions
/// (rows = output positions of a batch, K = patch size, N = output channels), in one run.
enum ConvolutionGemmProbe {
    static func run() {
        BLAS.configureThreads()
        // ResNet-18/50 at batch 8 (stage 1 3x3, stage 3 3x3, stage 4 3x3, 1x1 reduction and
        // expansion) and ResNet-20 CIFAR at batch 64, direct (im2col) and as one of Winograd's
        // 36 products per layer (rows = tiles).
        let shapes = [
            (25088, 576, 64), (1568, 2304, 256), (392, 4608, 512), (6272, 256, 1024), (25088, 256, 64), (25088, 64, 256),
            (65536, 144, 16), (4096, 16, 16), (256, 64, 64),
        ]
        for (m, k, n) in shapes {
            let w = FloatBuffer(count: k * n)
            for i in 0..<(k * n) { w[i] = Float(i % 13) * 0.01 }
            let packed = PackedMatrix(w, rows: k, columns: n)
            let x = FloatBuffer(count: m * k)
            let y = FloatBuffer(count: m * n)
            func rate(_ body: () -> Void) -> Double {
                body()
                var iterations = 0
                let start = Date()
                while Date().timeIntervalSince(start) < 1 || iterations < 3 {
                    body()
                    iterations += 1
                }
                return 2.0 * Double(m * k * n) * Double(iterations) / Date().timeIntervalSince(start) / 1e9
            }
            let ours = rate { packed.multiply(x.pointer, m: m, into: y.pointer) }
            let blas = rate { BLAS.matmul(x.pointer, w.pointer, y.pointer, m: m, k: k, n: n) }
            print("m \(m) k \(k) n \(n): packed \(String(format: "%.1f", ours)) GFLOP/s, OpenBLAS \(String(format: "%.1f", blas)) GFLOP/s (\(BLAS.coreName)), ratio \(String(format: "%.2f", ours / blas))")
        }
    }
}

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

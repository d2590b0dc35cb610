import Foundation
import Inference

/// Effective bandwidth of the matrix–vector products one GPT-2-124M decode step makes.
enum GemvProbe {
    static func run() {
        BLAS.configureThreads()
        for (k, n, transposed) in [(768, 2304, false), (768, 3072, false), (3072, 768, false), (768, 768, false), (768, 50257, true)] {
            let weights = FloatBuffer(count: k * n)
            for i in stride(from: 0, to: k * n, by: 97) { weights[i] = Float(i % 13) * 0.01 }
            let x = FloatBuffer(count: k)
            for i in 0..<k { x[i] = 0.5 }
            let y = FloatBuffer(count: n)
            let iterations = max(20, 200_000_000 / (k * n))
            let start = Date()
            for _ in 0..<iterations {
                BLAS.matmul(x.pointer, weights.pointer, y.pointer, m: 1, k: k, n: n, transposeB: transposed)
            }
            let elapsed = Date().timeIntervalSince(start) / Double(iterations)
            print("k \(k) n \(n) transposed \(transposed): \(String(format: "%.3f", elapsed * 1000)) ms, \(String(format: "%.1f", Double(k * n * 4) / elapsed / 1e9)) GB/s")
        }
    }
}

import Foundation
import Inference

/// GFLOP/s and weight bandwidth of `PackedMatrix` products for skinny batches, with weights
/// cycled through a working set larger than the caches.
enum PackedProbe {
    static func run() {
        let shape = (ProcessInfo.processInfo.environment["MODELGATE_PROBE_SHAPE"] ?? "768x3072").split(separator: "x").compactMap { Int($0) }
        let (k, n) = shape.count == 2 ? (shape[0], shape[1]) : (768, 3072)
        let format = BenchModel.format
        let source = FloatBuffer(count: k * n)
        for i in 0..<(k * n) { source[i] = Float(i % 17) * 0.01 }
        let weights = (0..<24).map { _ in PackedMatrix(source, rows: k, columns: n, format: format) }
        // Streamed: 24 different matrices (226 MB) in turn, as a decode step reads its layers.
        // Resident: one matrix (9.4 MB) again and again, from the last-level cache: the gap
        // between the two is memory time the kernel does not hide behind arithmetic.
        for (copies, label) in [(24, "streamed"), (1, "resident")] {
            for m in [1, 4, 8, 16, 32, 128] {
                let x = FloatBuffer(count: m * k)
                for i in 0..<(m * k) { x[i] = Float(i % 13) * 0.1 - 0.6 }
                let y = FloatBuffer(count: m * n)
                let iterations = 96
                let start = Date()
                for i in 0..<iterations { weights[i % copies].multiply(x.pointer, m: m, into: y.pointer) }
                let elapsed = Date().timeIntervalSince(start) / Double(iterations)
                print("\(format) \(label) m \(m): \(String(format: "%.3f", elapsed * 1000)) ms, \(String(format: "%.1f", 2.0 * Double(m * k * n) / elapsed / 1e9)) GFLOP/s, \(String(format: "%.1f", Double(weights[0].byteCount) / elapsed / 1e9)) GB/s")
            }
        }
    }
}

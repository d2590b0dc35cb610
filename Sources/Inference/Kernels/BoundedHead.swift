import Foundation
import CKernels

/// The column of `x · W` with the largest value, or a draw from the softmax of `x · W`, for rows x
/// of a packed matrix `W[K, N]` (an output head: greedy decoding and sampling), exactly as from
/// the whole product, while reading a quarter of W's bytes.
///
/// An int8 copy of W (one scale per column) gives every column's value approximately, through
/// the CPU's int8 dot products (AVX512-VNNI: 4 times a float32 FMA's multiply-adds, a quarter of
/// float32's bytes). Each approximation's error has a bound, from Cauchy-Schwarz:
///
///     |x·w - x̃·w̃| <= |x - x̃| |w| + |x̃| |w - w̃|
///
/// plus float32's own rounding of the exact product (at most K ulp-units of |x| |w|). Only the
/// columns whose upper bound reaches the largest lower bound can hold the maximum: those (a
/// few dozen of 50,257 on GPT-2's head) are computed exactly, in float32, by the same kernel
/// as `PackedMatrix.multiply` for one row, so the column chosen is the one a full product of
/// that row would choose, ties going to the lowest index, as `Sampler.argmax` does. Sampling
/// uses the upper bounds as a rejection sampler's envelope (see `choose`).
final class BoundedHead: @unchecked Sendable {
    let matrix: PackedMatrix
    let k4: Int
    let panels: Int
    let quantized: UnsafeMutablePointer<Int8>  // [panel][K / 4][16 columns][4]
    let columnSums: [Int32]
    let scales: [Float]
    private let norms: [Float]  // |w_j|, rounded up
    private let errors: [Float]  // |w_j - w̃_j|, rounded up

    /// Columns computed exactly at most before a row falls back to the full product.
    static let candidateLimit = 1024

    /// Whether this CPU has the int8 instructions and they are chosen (KernelSelection).
    static let available = KernelSelection.current.greedyInt8

    /// nil where the CPU lacks the instructions or W holds a NaN or an infinity.
    convenience init?(_ matrix: PackedMatrix) {
        guard Self.available else { return nil }
        self.init(building: matrix)
    }

    /// Builds the copy whatever the CPU (tests check the reference product against it).
    init?(building matrix: PackedMatrix) {
        let k = matrix.rows, width = PackedMatrix.panelWidth
        self.matrix = matrix
        k4 = (k + 3) / 4 * 4
        panels = matrix.panels
        let padded = panels * width
        quantized = UnsafeMutablePointer<Int8>.allocate(capacity: panels * k4 * width)
        quantized.initialize(repeating: 0, count: panels * k4 * width)
        var sums = [Int32](repeating: 0, count: padded), scales = [Float](repeating: 1, count: padded)
        var norms = [Float](repeating: 0, count: padded), errors = [Float](repeating: 0, count: padded)
        var column = [Float](repeating: 0, count: k)
        for j in 0..<matrix.columns {
            column.withUnsafeMutableBufferPointer { matrix.column(j, into: $0.baseAddress!) }
            let largest = column.reduce(Float(0)) { max($0, abs($1)) }
            guard largest.isFinite else {
                quantized.deallocate()
                return nil
            }
            let scale = largest > 0 ? largest / 127 : 1
            let base = (j / width) * k4 * width + (j % width) * 4
            var sum: Int32 = 0
            var squares = 0.0, misses = 0.0
            for i in 0..<k {
                let level = max(-127, min(127, (column[i] / scale).rounded()))
                quantized[base + (i / 4) * 64 + i % 4] = Int8(level)
                sum += Int32(level)
                let value = Double(column[i])
                squares += value * value
                misses += (value - Double(scale) * Double(level)) * (value - Double(scale) * Double(level))
            }
            sums[j] = sum
            scales[j] = scale
            norms[j] = Self.roundedUp(squares.squareRoot())
            errors[j] = Self.roundedUp(misses.squareRoot())
        }
        columnSums = sums
        self.scales = scales
        self.norms = norms
        self.errors = errors
    }

    deinit { quantized.deallocate() }

    private static func roundedUp(_ value: Double) -> Float {
        let widened = value * (1 + 0x1p-40)
        let float = Float(widened)
        return Double(float) < widened ? float.nextUp : float
    }

    /// Bytes read per product (the int8 copy).
    var byteCount: Int { panels * k4 * PackedMatrix.panelWidth }

    /// What `choose` did for its rows: columns computed exactly, rows that needed them all, and
    /// the sampling rows' proposals.
    struct Statistics {
        var rows = 0, candidates = 0, fullRows = 0, proposals = 0
    }

    /// What a row wants: its top column, or a draw from the softmax of its values at a temperature
    /// (`uniform` gives numbers in [0, 1)); both after subtracting penalties, in float, as
    /// `Sampler.applyPenalties` does.
    enum Choice {
        case greedy(penalties: [Int: Float])
        case sample(temperature: Double, penalties: [Int: Float], uniform: () -> Double)

        var penalties: [Int: Float] {
            switch self {
            case .greedy(let penalties), .sample(_, let penalties, _): return penalties
            }
        }
    }

    /// Proposals a sampling row draws at most before it computes its whole row.
    static let proposalLimit = 64

    /// `choose` with every row greedy: the column j with the largest `(x · W)[j] -
    /// adjustments[row][j]`, ties going to the lowest column.
    func argmax(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int, adjustments: [[Int: Float]], statistics: inout Statistics,
        reference: Bool = false
    ) -> [Int] {
        choose(x, m: m, ldx: ldx, rows: (0..<m).map { .greedy(penalties: adjustments.indices.contains($0) ? adjustments[$0] : [:]) },
               statistics: &statistics, reference: reference)
    }

    /// For each of the `m` rows of x (`ldx` floats apart), the column its choice picks.
    ///
    /// A greedy row computes exactly only the columns whose upper bound reaches the best lower
    /// bound, and picks the one a full product would. A sampling row draws from the softmax of
    /// its upper bounds, then keeps the draw j with probability `exp((v_j - upper_j) / T)` for
    /// its exact value v_j, else draws again: rejection sampling, whose kept draws follow the
    /// softmax of the exact values exactly (the upper bounds only set how often a draw is kept).
    func choose(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int, rows choices: [Choice], statistics: inout Statistics, reference: Bool = false
    ) -> [Int] {
        let k = matrix.rows, n = matrix.columns, width = PackedMatrix.panelWidth, padded = panels * width
        let xq = UnsafeMutablePointer<UInt8>.allocate(capacity: m * k4)
        defer { xq.deallocate() }
        var xScales = [Float](repeating: 1, count: m), xNorms = [Float](repeating: 0, count: 3 * m)
        mg_int8_quantize_rows(x, ldx, Int32(m), Int32(k), Int32(k4), xq, &xScales, &xNorms)
        let approximate = FloatBuffer(count: m * padded, zeroed: false)

        // The approximate product, panels shared among the compute threads.
        let threads = ComputeThreads.count(forWork: m * k * n / 4, bytes: byteCount)
        let chunkPanels = threads == 1 ? panels : max(4, (panels / (threads * 8) + 3) / 4 * 4)
        let chunks = (panels + chunkPanels - 1) / chunkPanels
        nonisolated(unsafe) let (source, target) = (UnsafePointer(xq), approximate.pointer)
        let (sums, scales, panelCount, k4) = (columnSums, self.scales, panels, self.k4)
        nonisolated(unsafe) let quantized = UnsafePointer(self.quantized)
        let xScaleValues = xScales
        ComputeThreads.run(threads: threads, chunks: chunks) { chunk in
            let first = chunk * chunkPanels, last = min(panelCount, first + chunkPanels)
            let product = reference ? mg_int8_panels_product_reference : mg_int8_panels_product
            product(source, Int32(m), Int32(k4), quantized, sums, scales, xScaleValues, Int32(first), Int32(last), target, padded)
        }

        let gamma = Float(k) * Float.ulpOfOne / 2 * 1.01  // float32 summation of K products
        let exact = FloatBuffer(count: padded, zeroed: false)
        var candidates = [Int32](repeating: 0, count: Self.candidateLimit)
        var chosen: [Int] = []
        for r in 0..<m {
            let row = x + r * ldx
            let choice = choices.indices.contains(r) ? choices[r] : .greedy(penalties: [:])
            let penalties = choice.penalties.filter { $0.key >= 0 && $0.key < n }
            let indices = penalties.keys.map { Int32($0) }, values = indices.map { penalties[Int($0)] ?? 0 }
            let (xNorm, xError, xKept) = (xNorms[3 * r], xNorms[3 * r + 1], xNorms[3 * r + 2])
            let bound = (xError + gamma * xNorm) * (1 + 0x1p-20)
            let approximations = approximate.pointer + r * padded
            statistics.rows += 1
            // A row's whole exact values, penalties subtracted (bounds too loose to help, or a
            // row that is not finite).
            func wholeRow() -> [Float] {
                matrix.multiply(row, m: 1, ldx: ldx, into: exact.pointer, ldy: padded)
                var logits = Array(UnsafeBufferPointer(start: exact.pointer, count: n))
                for (token, penalty) in penalties { logits[token] -= penalty }
                statistics.fullRows += 1
                statistics.candidates += n
                return logits
            }
            var panel = -1
            func exactValue(_ j: Int) -> Float {  // as the full product computes it, less its penalty
                if j / width != panel {
                    panel = j / width
                    matrix.multiplyPanel(panel, row, into: exact.pointer)
                    statistics.candidates += width
                }
                return exact.pointer[j] - (penalties[j] ?? 0)
            }
            switch choice {
            case .greedy:
                var count = -1
                if xNorm.isFinite {
                    count = Int(mg_int8_candidates(
                        approximations, Int32(n), norms, errors, bound, xKept, indices, values, Int32(indices.count), &candidates,
                        Int32(Self.candidateLimit)))
                }
                guard count >= 1 && count <= Self.candidateLimit else {
                    chosen.append(Sampler.argmax(wholeRow()))
                    continue
                }
                var best = 0  // as Sampler.argmax: the first of the largest
                var bestValue = -Float.infinity
                for index in 0..<count {
                    let j = Int(candidates[index])
                    let value = exactValue(j)
                    if value > bestValue {
                        best = j
                        bestValue = value
                    }
                }
                chosen.append(best)
            case .sample(let temperature, _, let uniform):
                var token: Int?
                if xNorm.isFinite {
                    mg_int8_upper_bounds(approximations, Int32(n), norms, errors, bound, xKept, indices, values, Int32(indices.count))
                    let upper = Array(UnsafeBufferPointer(start: approximations, count: n))
                    let (drawn, proposals) = Self.rejectionSample(upper, temperature: temperature, uniform: uniform, exact: exactValue)
                    token = drawn
                    statistics.proposals += proposals
                }
                chosen.append(token ?? Sampler.draw(wholeRow(), temperature: temperature, uniform: uniform))
            }
        }
        return chosen
    }

    /// Draws from the softmax of the upper bounds and keeps a draw with probability
    /// `exp((exact - upper) / T)`; nil after `proposalLimit` draws kept none (or bounds that are
    /// not finite), for the caller to draw from the whole row. Also: how many draws it took.
    private static func rejectionSample(
        _ upper: [Float], temperature: Double, uniform: () -> Double, exact: (Int) -> Float
    ) -> (token: Int?, proposals: Int) {
        var cumulative = Sampler.exponentials(upper, scale: Float(1 / temperature))  // made running totals
        var total = 0.0
        for index in cumulative.indices {
            total += cumulative[index]
            cumulative[index] = total
        }
        guard total.isFinite && total > 0 else { return (nil, 0) }
        for proposal in 1...proposalLimit {
            // The first index whose running total passes the target (a zero weight never is).
            let target = uniform() * total
            var (low, high) = (0, cumulative.count - 1)
            while low < high {
                let middle = (low + high) / 2
                if cumulative[middle] > target { high = middle } else { low = middle + 1 }
            }
            let accept = exp(Double(exact(low) - upper[low]) / temperature)
            if uniform() < accept { return (low, proposal) }
        }
        return (nil, proposalLimit)
    }
}

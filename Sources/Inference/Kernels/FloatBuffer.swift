import Foundation

/// An owned, aligned buffer of floats: weights, activations, caches. Kernels take its pointer;
/// no copy-on-write, no bounds checks on the hot paths.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int, zeroed: Bool = true) {
        self.count = count
        pointer = Self.allocateRaw(bytes: max(count, 1) * 4).bindMemory(to: Float.self, capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(count, 1)) }
    }

    /// Memory for kernels, released with `free`. Large blocks (weights, caches) go on 2 MiB
    /// pages: streaming reads are not cut at every 4 KiB page (hardware prefetchers stop there)
    /// and the TLB covers the whole model.
    static func allocateRaw(bytes: Int) -> UnsafeMutableRawPointer {
        var raw: UnsafeMutableRawPointer?
        if bytes >= hugePageThreshold, posix_memalign(&raw, hugePage, bytes) == 0, let raw {
            madvise(raw, (bytes + hugePage - 1) / hugePage * hugePage, MADV_HUGEPAGE)
            return raw
        }
        if posix_memalign(&raw, 64, bytes) == 0, let raw { return raw }
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    }

    static let hugePage = 2 << 20
    static let hugePageThreshold = 4 << 20

    public convenience init(_ values: [Float]) {
        self.init(count: values.count, zeroed: false)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit { free(UnsafeMutableRawPointer(pointer)) }

    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    /// Grows to at least `count` elements, keeping the first `keeping` values.
    public func resized(to newCount: Int, keeping: Int) -> FloatBuffer {
        let fresh = FloatBuffer(count: newCount, zeroed: false)
        fresh.pointer.update(from: pointer, count: min(keeping, count, newCount))
        return fresh
    }
}

import Foundation

/// An owned, aligned buffer of floats: weights, activations, caches. Kernels take its pointer;
/// no copy-on-write, no bounds checks on the hot paths.
package final class FloatBuffer: @unchecked Sendable {
    package let count: Int
    package let pointer: UnsafeMutablePointer<Float>

    package init(count: Int, zeroed: Bool = true) {
        self.count = count
        pointer = Self.allocateRaw(bytes: max(count, 1) * 4).bindMemory(to: Float.self, capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(count, 1)) }
    }

    /// Memory for kernels, released with `free`. Large blocks (weights, caches) go on 2 MiB
    /// pages: streaming reads are not cut at every 4 KiB page (hardware prefetchers stop there)
    /// and the TLB covers the whole model.
    static func allocateRaw(bytes: Int) -> UnsafeMutableRawPointer {
        if let recycled = BufferRecycler.shared.take(bytes: bytes) { return recycled }
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

    package convenience init(_ values: [Float]) {
        self.init(count: values.count, zeroed: false)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit { Self.release(UnsafeMutableRawPointer(pointer), bytes: max(count, 1) * 4) }

    package var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    package subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    /// Grows to at least `count` elements, keeping the first `keeping` values.
    package func resized(to newCount: Int, keeping: Int) -> FloatBuffer {
        let fresh = FloatBuffer(count: newCount, zeroed: false)
        fresh.pointer.update(from: pointer, count: min(keeping, count, newCount))
        return fresh
    }
}

extension FloatBuffer {
    /// Returns memory to the recycler (large blocks) or to the system.
    static func release(_ raw: UnsafeMutableRawPointer, bytes: Int) {
        if !BufferRecycler.shared.keep(raw, bytes: bytes) { free(raw) }
    }
}

/// Keeps recently freed large blocks (activations of the previous forward pass) for the next
/// pass: without it every pass maps fresh pages and the kernel zeroes them, which cost more
/// than the arithmetic for small images.
final class BufferRecycler: @unchecked Sendable {
    static let shared = BufferRecycler()
    private let lock = NSLock()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var held = 0
    static let limit = 768 << 20
    /// Smaller blocks come from malloc's arenas, which reuse them without new pages.
    static let threshold = 256 << 10

    func take(bytes: Int) -> UnsafeMutableRawPointer? {
        guard bytes >= Self.threshold else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let block = free[bytes]?.popLast() else { return nil }
        held -= bytes
        return block
    }

    func keep(_ block: UnsafeMutableRawPointer, bytes: Int) -> Bool {
        guard bytes >= Self.threshold else { return false }
        lock.lock()
        defer { lock.unlock() }
        guard held + bytes <= Self.limit, (free[bytes]?.count ?? 0) < 8 else { return false }
        free[bytes, default: []].append(block)
        held += bytes
        return true
    }
}

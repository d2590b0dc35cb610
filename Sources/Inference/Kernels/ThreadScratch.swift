import Foundation

/// One scratch block per thread, kept for the thread's next use and grown when too small. A
/// kernel that fills a block and reads it back soon after (Winograd's transformed tiles) then
/// finds it in the L2 cache of its own core; a block from the shared recycler was often last
/// written by the other core and came across through memory.
enum ThreadScratch {
    /// Separate blocks for kernels that may run inside one another's work.
    enum Slot: Int, CaseIterable {
        case winograd, pairedPanel
    }

    private final class Blocks {
        var buffers: [FloatBuffer?] = Array(repeating: nil, count: Slot.allCases.count)
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // Released with its thread.
        pthread_key_create(&key) { raw in
            if let raw { Unmanaged<AnyObject>.fromOpaque(raw).release() }
        }
        return key
    }()

    /// At least `count` floats for the calling thread, valid until its next call for `slot`.
    static func floats(_ count: Int, slot: Slot = .winograd) -> UnsafeMutablePointer<Float> {
        let blocks: Blocks
        if let raw = pthread_getspecific(key) {
            blocks = Unmanaged<Blocks>.fromOpaque(raw).takeUnretainedValue()
        } else {
            blocks = Blocks()
            pthread_setspecific(key, Unmanaged.passRetained(blocks as AnyObject).toOpaque())
        }
        if let buffer = blocks.buffers[slot.rawValue], buffer.count >= count { return buffer.pointer }
        let buffer = FloatBuffer(count: count, zeroed: false)
        blocks.buffers[slot.rawValue] = buffer
        return buffer.pointer
    }
}

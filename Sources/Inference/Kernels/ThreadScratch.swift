import Foundation

/// One scratch block per thread, kept for the thread's next use and grown when too small. A
/// kernel that fills a block and reads it back soon after (Winograd's transformed tiles) then
/// finds it in the L2 cache of its own core; a block from the shared recycler was often last
/// written by the other core and came across through memory.
enum ThreadScratch {
    private final class Block {
        var buffer: FloatBuffer
        init(_ buffer: FloatBuffer) { self.buffer = buffer }
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // Released with its thread.
        pthread_key_create(&key) { raw in
            if let raw { Unmanaged<AnyObject>.fromOpaque(raw).release() }
        }
        return key
    }()

    /// At least `count` floats for the calling thread, valid until its next call.
    static func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if let raw = pthread_getspecific(key) {
            let block = Unmanaged<Block>.fromOpaque(raw).takeUnretainedValue()
            if block.buffer.count < count { block.buffer = FloatBuffer(count: count, zeroed: false) }
            return block.buffer.pointer
        }
        let block = Block(FloatBuffer(count: count, zeroed: false))
        pthread_setspecific(key, Unmanaged.passRetained(block as AnyObject).toOpaque())
        return block.buffer.pointer
    }
}

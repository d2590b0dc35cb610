import Foundation
import Synchronization
import Testing
import TestSupport

@testable import Inference

@Suite struct ComputeTeamTests {
    /// Thousands of products back to back, of varying sizes, from several callers at once (a
    /// caller that finds the team busy runs alone): every chunk of every product runs exactly
    /// once, with that product's body, and `run` returns only when all of them have. (Callers
    /// block, so each has a thread of its own rather than one the other tests' tasks need.)
    @Test func everyChunkOfEveryProductRunsExactlyOnce() async throws {
        let team = ComputeTeam(workers: 2)
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            for caller in 0..<3 {
                group.addTask {
                    try await onOwnThread { () -> Int in
                        var failures = 0
                        let slots = UnsafeMutableBufferPointer<Int>.allocate(capacity: 64)
                        defer { slots.deallocate() }
                        nonisolated(unsafe) let shared = slots
                        for product in 0..<1_500 {
                            let chunks = 1 + (product * 7 + caller) % 64
                            shared.initialize(repeating: 0)
                            let tag = caller * 1_000_000 + product * 100
                            team.run(chunks: chunks) { index in
                                // A stale body (another product's) or a chunk run twice shows here.
                                shared[index] = shared[index] == 0 ? tag + index : -1
                                if index % 5 == 0 { for _ in 0..<200 { withExtendedLifetime(index) {} } }
                            }
                            for index in 0..<64 where shared[index] != (index < chunks ? tag + index : 0) {
                                failures += 1
                            }
                        }
                        return failures
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(failures == 0)
    }

    /// A worker still running a slow chunk holds the product open; the caller returns after it.
    @Test func runWaitsForChunksThatWorkersAreStillRunning() async throws {
        let team = ComputeTeam(workers: 1)
        let counts = try await onOwnThread { () -> [Int] in
            let finished = Mutex(0)
            return (0..<20).map { _ in
                finished.withLock { $0 = 0 }
                team.run(chunks: 2) { index in
                    if index == 1 { usleep(2_000) }
                    finished.withLock { $0 += 1 }
                }
                return finished.withLock { $0 }
            }
        }
        #expect(counts.allSatisfy { $0 == 2 }, "\(counts)")
    }
}

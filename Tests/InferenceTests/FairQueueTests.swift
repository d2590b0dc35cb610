import Inference
import Testing

@Suite struct FairQueueTests {
    @Test func servesKeysRoundRobinWhateverTheirBacklog() {
        var queue = FairQueue<String>()
        for index in 0..<5 { queue.append("a\(index)", key: "a") }
        queue.append("b0", key: "b")
        queue.append("b1", key: "b")
        var order: [String] = []
        while let next = queue.popFirst() { order.append(next) }
        #expect(order == ["a0", "b0", "a1", "b1", "a2", "a3", "a4"])
        #expect(queue.isEmpty)
    }

    @Test func aFullQueueMakesRoomForAQuietKeyAtTheFloodersExpense() {
        var queue = FairQueue<String>()
        for index in 0..<4 { queue.append("a\(index)", key: "a") }
        // The flooder itself gets nothing evicted for it.
        #expect(queue.evictForFairness(incoming: "a") == nil)
        // A quiet key takes the flooder's newest slot.
        #expect(queue.evictForFairness(incoming: "b") == "a3")
        queue.append("b0", key: "b")
        #expect(queue.count == 4)
        #expect(queue.evictForFairness(incoming: "b") == "a2")
        queue.append("b1", key: "b")
        // Now a has 2 and b has 2: b is not favoured beyond an equal share.
        #expect(queue.evictForFairness(incoming: "b") == nil)
        var order: [String] = []
        while let next = queue.popFirst() { order.append(next) }
        #expect(order == ["a0", "b0", "a1", "b1"])
    }
}

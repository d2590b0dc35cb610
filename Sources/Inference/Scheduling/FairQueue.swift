/// A FIFO per key (tenant), served round-robin across keys: one tenant's flood waits behind
/// its own requests, not in front of everyone else's. Not thread-safe; the owner locks.
package struct FairQueue<Element> {
    private var queues: [String: [Element]] = [:]
    private var order: [String] = []
    private var cursor = 0
    package private(set) var count = 0

    package init() {}

    package var isEmpty: Bool { count == 0 }

    /// Whether elements of `key` are waiting.
    package func hasElements(forKey key: String) -> Bool { queues[key] != nil }

    package mutating func append(_ element: Element, key: String) {
        if queues[key] == nil {
            queues[key] = []
            order.append(key)
        }
        queues[key, default: []].append(element)
        count += 1
    }

    /// The next element in round-robin order over keys.
    package mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        for _ in 0..<order.count {
            if cursor >= order.count { cursor = 0 }
            let key = order[cursor]
            if var queue = queues[key], !queue.isEmpty {
                let element = queue.removeFirst()
                count -= 1
                if queue.isEmpty {
                    queues[key] = nil
                    order.remove(at: cursor)
                } else {
                    queues[key] = queue
                    cursor += 1
                }
                return element
            }
            cursor += 1
        }
        return nil
    }

    /// The next element without removing it.
    package func peek() -> Element? {
        guard count > 0 else { return nil }
        var index = cursor
        for _ in 0..<order.count {
            if index >= order.count { index = 0 }
            if let element = queues[order[index]]?.first { return element }
            index += 1
        }
        return nil
    }

    /// The oldest element of the first key, in round-robin order, that `eligible` accepts.
    package func peek(whereKey eligible: (String) -> Bool) -> (key: String, element: Element)? {
        guard count > 0 else { return nil }
        var index = cursor
        for _ in 0..<order.count {
            if index >= order.count { index = 0 }
            let key = order[index]
            if eligible(key), let element = queues[key]?.first { return (key, element) }
            index += 1
        }
        return nil
    }

    /// Removes the oldest element of `key`.
    @discardableResult
    package mutating func removeFirst(ofKey key: String) -> Element? {
        guard var queue = queues[key], !queue.isEmpty, let index = order.firstIndex(of: key) else { return nil }
        let element = queue.removeFirst()
        count -= 1
        if queue.isEmpty {
            queues[key] = nil
            order.remove(at: index)
            if cursor > index { cursor -= 1 }
            if cursor >= order.count { cursor = 0 }
        } else {
            queues[key] = queue
        }
        return element
    }

    /// Makes room in a full queue for an element of `key` by taking the newest element of the
    /// longest queue, when that queue would still be longer than `key`'s (longest-queue drop):
    /// a tenant flooding a full queue loses its own latest request instead of locking every
    /// other tenant out. Returns the evicted element, or nil when `key` is itself the longest.
    package mutating func evictForFairness(incoming key: String) -> Element? {
        let own = queues[key]?.count ?? 0
        guard let longest = queues.max(by: { $0.value.count < $1.value.count }), longest.key != key, longest.value.count > own + 1 else {
            return nil
        }
        count -= 1
        return queues[longest.key]?.popLast()
    }

    /// Whether an element of `key` would be taken now by a queue bounded at `capacity` (there is
    /// room, or `evictForFairness` would make some).
    package func accepts(key: String, capacity: Int) -> Bool {
        if count < capacity { return true }
        let own = queues[key]?.count ?? 0
        return queues.contains { $0.key != key && $0.value.count > own + 1 }
    }

    /// Removes every element matching `predicate` (cancelled requests).
    package mutating func removeAll(where predicate: (Element) -> Bool) {
        for key in order {
            let before = queues[key]?.count ?? 0
            queues[key]?.removeAll(where: predicate)
            count -= before - (queues[key]?.count ?? 0)
        }
        let emptied = Set(order.filter { queues[$0]?.isEmpty ?? true })
        for key in emptied { queues[key] = nil }
        order.removeAll { emptied.contains($0) }
        if cursor >= order.count { cursor = 0 }
    }
}

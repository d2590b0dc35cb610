import Synchronization

/// The endpoints of one upstream model and what is known of each: requests outstanding,
/// consecutive failures, ejection.
///
/// A request goes to the endpoint with the fewest outstanding requests for its weight, among
/// those not ejected and not full. An endpoint that fails `ejectAfter` times in a row (a
/// refused connection, a 5xx, a timeout, a broken stream) is ejected — its circuit opened —
/// for `ejectFor`, doubled at each ejection in a row up to 16 times as long; once that has passed
/// it is probed, by the health check or by one request, and a success closes the circuit.
final class EndpointPool: Sendable {
    struct Endpoint: Sendable {
        let index: Int
        let base: String
        let label: String
        let weight: Int
    }

    struct Health: Sendable, Equatable {
        var outstanding = 0
        var consecutiveFailures = 0
        /// Ejections in a row (the back-off's exponent); 0 once a request or probe succeeds.
        var ejections = 0
        var ejectedUntil: ContinuousClock.Instant?
        /// Whether one request is probing an endpoint whose ejection ended.
        var probing = false
        var requests = 0
        var failures = 0
        var latencySeconds = 0.0
    }

    let endpoints: [Endpoint]
    let maxConcurrent: Int
    let ejectAfter: Int
    let ejectFor: Duration
    private let health: Mutex<[Health]>
    private let rotation = Atomic<Int>(0)

    init(settings: UpstreamSettings) {
        endpoints = settings.endpoints.enumerated().map { Endpoint(index: $0.offset, base: $0.element.base, label: $0.element.label, weight: $0.element.weight) }
        maxConcurrent = settings.maxConcurrent
        ejectAfter = settings.ejectAfterFailures
        ejectFor = settings.ejectFor
        health = Mutex([Health](repeating: Health(), count: endpoints.count))
    }

    /// The endpoint for a request (its outstanding count taken), skipping those in `tried`:
    /// least outstanding per weight among the healthy ones with room, else one whose ejection
    /// has ended (as a probe), else nil.
    func pick(excluding tried: Set<Int>, now: ContinuousClock.Instant = .now) -> Endpoint? {
        let start = rotation.add(1, ordering: .relaxed).newValue
        return health.withLock { states -> Endpoint? in
            var best: (index: Int, load: Double)?
            var probe: Int?
            for offset in 0..<endpoints.count {
                let index = (start + offset) % endpoints.count
                guard !tried.contains(index) else { continue }
                let state = states[index]
                if let until = state.ejectedUntil {
                    if until <= now, !state.probing, probe == nil { probe = index }
                    continue
                }
                let load = Double(state.outstanding + (state.outstanding >= maxConcurrent ? 1_000_000 : 0)) / Double(endpoints[index].weight)
                if load < (best?.load ?? .infinity) { best = (index, load) }
            }
            guard let chosen = best?.index ?? probe else { return nil }
            if best == nil { states[chosen].probing = true }
            states[chosen].outstanding += 1
            states[chosen].requests += 1
            return endpoints[chosen]
        }
    }

    /// The request on `endpoint` ended: `failed` counts toward its ejection, a success closes
    /// its circuit.
    func finish(_ endpoint: Endpoint, failed: Bool, seconds: Double, now: ContinuousClock.Instant = .now) {
        health.withLock { states in
            states[endpoint.index].outstanding -= 1
            states[endpoint.index].latencySeconds += seconds
            record(&states[endpoint.index], failed: failed, now: now)
        }
    }

    /// A health check's result.
    func probed(_ index: Int, healthy: Bool, now: ContinuousClock.Instant = .now) {
        health.withLock { states in
            // A failing check of an ejected endpoint extends its ejection; a failing check of a
            // serving one counts like a failed request.
            record(&states[index], failed: !healthy, now: now)
        }
    }

    private func record(_ state: inout Health, failed: Bool, now: ContinuousClock.Instant) {
        let wasProbing = state.probing
        state.probing = false
        guard failed else {
            state.consecutiveFailures = 0
            state.ejections = 0
            state.ejectedUntil = nil
            return
        }
        state.failures += 1
        state.consecutiveFailures += 1
        if wasProbing || state.ejectedUntil != nil || state.consecutiveFailures >= ejectAfter {
            state.ejectedUntil = now + ejectFor * (1 << min(state.ejections, 4))
            state.ejections += 1
            state.consecutiveFailures = 0
        }
    }

    var status: [UpstreamEndpointStatus] {
        let now = ContinuousClock.now
        return health.withLock { states in
            endpoints.map { endpoint in
                let state = states[endpoint.index]
                return UpstreamEndpointStatus(
                    endpoint: endpoint.label, healthy: (state.ejectedUntil.map { $0 <= now } ?? true) && state.ejections == 0,
                    outstanding: state.outstanding, requests: state.requests, failures: state.failures, latencySeconds: state.latencySeconds)
            }
        }
    }
}

/// What `/metrics` and `modelgate model show` report of one endpoint: its `host:port`, never
/// its path or credentials.
public struct UpstreamEndpointStatus: Sendable, Equatable {
    public var endpoint: String
    public var healthy: Bool
    public var outstanding: Int
    public var requests: Int
    public var failures: Int
    /// The time requests to it took, added up (for the mean latency).
    public var latencySeconds: Double
}

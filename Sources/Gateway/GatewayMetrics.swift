import Foundation
import CoreMetrics
import Metrics
import Synchronization

/// What the gateway counts, through swift-metrics (the server bootstraps a Prometheus backend
/// and serves it at `GET /metrics`). Labels never carry tenant secrets or key material; paths
/// are reduced to their route so ids do not explode the label space.
enum GatewayMetrics {
    /// `route` is the matched route's template (`/v1/keys/{id}`), never the raw path: a label
    /// made from what a client sent would let any client grow the label space without bound.
    static func request(route: String, method: String, status: Int, seconds: Double) {
        let handles = requestHandles(route: route, method: methodLabel(method), status: status)
        handles.counter.increment()
        handles.timer.recordNanoseconds(Int64(seconds * 1e9))
    }

    /// The route label of a request: the router's template for the route it matched, or
    /// `unmatched` for every path no route matched.
    static func routeLabel(endpointPath: String?) -> String {
        guard let endpointPath, endpointPath != "NotFound", endpointPath.hasPrefix("/") else { return "unmatched" }
        return endpointPath
    }

    /// HTTP allows any token as a method: the label knows the standard ones and calls the rest `other`.
    static func methodLabel(_ method: String) -> String {
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(method) ? method : "other"
    }

    /// The counter and timer of one route, method and status, made once: the backend's own
    /// lookup (labels sorted and joined under its registry lock) is too dear for every request.
    private static func requestHandles(route: String, method: String, status: Int) -> RequestHandles {
        let key = RequestKey(route: route, method: method, status: status)
        if let handles = cache.withLock({ $0[key] }) { return handles }
        let handles = RequestHandles(
            counter: CoreMetrics.Counter(label: "modelgate_http_requests_total", dimensions: [("route", route), ("method", method), ("status", String(status))]),
            timer: CoreMetrics.Timer(label: "modelgate_http_request_duration_seconds", dimensions: [("route", route)]))
        cache.withLock { $0[key] = handles }
        return handles
    }

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    private struct RequestHandles: Sendable {
        var counter: CoreMetrics.Counter
        var timer: CoreMetrics.Timer
    }

    private static let cache = Mutex<[RequestKey: RequestHandles]>([:])

    static func usage(model: String, promptTokens: Int, completionTokens: Int, images: Int) {
        if promptTokens > 0 { CoreMetrics.Counter(label: "modelgate_tokens_total", dimensions: [("model", model), ("kind", "prompt")]).increment(by: promptTokens) }
        if completionTokens > 0 {
            CoreMetrics.Counter(label: "modelgate_tokens_total", dimensions: [("model", model), ("kind", "completion")]).increment(by: completionTokens)
        }
        if images > 0 { CoreMetrics.Counter(label: "modelgate_images_total", dimensions: [("model", model)]).increment(by: images) }
    }

    /// An inference request refused before it ran: `rate_limit`, `quota`, `queue_full`, `tenant_share` or `unavailable`.
    static func rejected(_ reason: String) {
        CoreMetrics.Counter(label: "modelgate_admission_rejections_total", dimensions: [("reason", reason)]).increment()
    }
}

import Hummingbird
import Logging

/// Per-request state carried through the middleware chain.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The `x-request-id` of this request (accepted from the client or minted).
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}

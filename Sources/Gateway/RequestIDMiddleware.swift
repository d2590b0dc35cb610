import Foundation
import HTTPTypes
import Hummingbird

/// Mints the request id, echoes it on the response as `x-request-id`, and makes it the
/// idempotency key of the usage event. It is always ours: a client-chosen id could otherwise
/// collide with an earlier request and go unbilled. A client's own correlation id
/// (`x-client-request-id`, as OpenAI's clients send it) is echoed back and logged beside it.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    static let header = HTTPField.Name("x-request-id")!  // safe: constant, valid token
    static let clientHeader = HTTPField.Name("x-client-request-id")!  // safe: constant, valid token

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.requestID = Self.mint()
        context.logger[metadataKey: "request_id"] = .string(context.requestID)
        let clientID = request.headers[Self.clientHeader].flatMap(Self.acceptable)
        if let clientID { context.logger[metadataKey: "client_request_id"] = .string(clientID) }
        do {
            var response = try await next(request, context)
            response.headers[Self.header] = context.requestID
            if let clientID { response.headers[Self.clientHeader] = clientID }
            return response
        } catch let error as OpenAIError {
            var error = error
            error.headers[Self.header] = context.requestID
            if let clientID { error.headers[Self.clientHeader] = clientID }
            throw error
        }
    }

    /// `req_` + 32 random hex digits (128 bits).
    static func mint() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var bytes = Array("req_".utf8)
        bytes.reserveCapacity(36)
        for _ in 0..<2 {
            var value = generator.next() as UInt64
            for _ in 0..<16 {
                bytes.append(digits[Int(value & 0xf)])
                value >>= 4
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// 1–128 characters of `[A-Za-z0-9._:-]`; anything else is ignored.
    static func acceptable(_ value: String) -> String? {
        guard (1...128).contains(value.utf8.count) else { return nil }
        let allowed = value.utf8.allSatisfy { byte in
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
                || byte == 46 || byte == 95 || byte == 58 || byte == 45
        }
        return allowed ? value : nil
    }
}

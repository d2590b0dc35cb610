import Foundation
import Hummingbird
import NIOCore

/// Request bodies: decoded strictly, with errors that name the offending field.
enum JSONBody {
    static func decode<Value: Decodable>(_ type: Value.Type, from request: Request, context: GatewayRequestContext, limit: Int) async throws -> Value {
        let data = Data(buffer: try await collect(request, limit: limit))
        if data.isEmpty { throw OpenAIError.invalidRequest("request body must be a JSON object") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(Value.self, from: data)
        } catch let error as DecodingError {
            throw describe(error)
        } catch let error as OpenAIError {
            throw error
        } catch {
            throw OpenAIError.invalidRequest("request body is not valid JSON")
        }
    }

    /// The whole body, or 413 when it is longer than `limit` — whether the Content-Length said
    /// so up front (Hummingbird's HTTPError) or the bytes streamed past it (NIO's error).
    static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        var request = request
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge(limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge(limit)
        }
    }

    static func tooLarge(_ limit: Int) -> OpenAIError {
        OpenAIError(status: .contentTooLarge, message: "request body exceeds \(limit) bytes", type: "invalid_request_error", code: "request_too_large")
    }

    static func describe(_ error: DecodingError) -> OpenAIError {
        func path(_ codingPath: [any CodingKey]) -> String? {
            let text = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
            return text.isEmpty ? nil : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath + [key]) ?? key.stringValue
            return .invalidRequest("missing required parameter '\(field)'", param: field)
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            let field = path(context.codingPath)
            return .invalidRequest("invalid type for '\(field ?? "body")': \(context.debugDescription)", param: field)
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            if field == nil { return .invalidRequest("request body is not valid JSON") }
            return .invalidRequest("invalid value for '\(field ?? "body")': \(context.debugDescription)", param: field)
        @unknown default:
            return .invalidRequest("request body could not be decoded")
        }
    }
}

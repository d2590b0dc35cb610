import Foundation
import Hummingbird
import NIOCore

/// Request bodies: decoded strictly, with errors that name the offending field.
enum JSONBody {
    static func decode<Value: Decodable>(_ type: Value.Type, from request: Request, context: GatewayRequestContext, limit: Int) async throws -> Value {
        try decode(type, Array(buffer: try await collect(request, limit: limit)))
    }

    /// Decodes a JSON body strictly (`StrictJSON`): an unknown member is a 400 naming it, a
    /// value of the wrong type a 400 naming the field, the type expected and the type sent.
    static func decode<Value: Decodable>(_ type: Value.Type, _ bytes: [UInt8]) throws -> Value {
        guard !bytes.isEmpty else { throw OpenAIError.invalidRequest("request body must be a JSON object") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try StrictJSON.decode(Value.self, from: Data(bytes), decoder: decoder)
        } catch let error as StrictJSON.UnknownMembers {
            let names = error.paths.map { "'\($0)'" }.joined(separator: ", ")
            throw OpenAIError.invalidRequest(
                "Unknown parameter\(error.paths.count == 1 ? "" : "s"): \(names).", param: error.paths.first, code: "unknown_parameter")
        } catch let error as DecodingError {
            throw describe(error, body: bytes)
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

    /// A decoding error in OpenAI's words: "Invalid type for 'max_tokens': expected an
    /// integer, but got a string instead." (`param` the field, code `invalid_type`).
    static func describe(_ error: DecodingError, body: [UInt8]) -> OpenAIError {
        func path(_ codingPath: [any CodingKey]) -> String? {
            let text = StrictJSON.path(codingPath)
            return text.isEmpty ? nil : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath + [key]) ?? key.stringValue
            return .invalidRequest("Missing required parameter: '\(field)'.", param: field, code: "missing_required_parameter")
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            let field = path(context.codingPath)
            let sent = JSONValueKind.at(context.codingPath, in: body)
            // Types that accept several shapes say which in their own words.
            let expected = context.debugDescription.hasPrefix("expected ") ? String(context.debugDescription.dropFirst(9)) : JSONValueKind.expected(type)
            let got = sent.map { ", but got \($0) instead" } ?? ""
            return .invalidRequest("Invalid type for '\(field ?? "body")': expected \(expected)\(got).", param: field, code: "invalid_type")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            if field == nil { return .invalidRequest("request body is not valid JSON") }
            return .invalidRequest("Invalid value for '\(field ?? "body")': \(context.debugDescription)", param: field, code: "invalid_value")
        @unknown default:
            return .invalidRequest("request body could not be decoded")
        }
    }
}

/// What a JSON value is, in the words of OpenAI's errors.
enum JSONValueKind {
    static func expected(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt.Type, is UInt64.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        default:
            String(describing: type).hasPrefix("Array") ? "an array" : (String(describing: type).hasPrefix("Dictionary") ? "an object" : "a valid value")
        }
    }

    /// The kind of the value at `codingPath` in the JSON `body`, or nil where it cannot be found.
    static func at(_ codingPath: [any CodingKey], in body: [UInt8]) -> String? {
        guard var value = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) else { return nil }
        for key in codingPath {
            if let array = value as? [Any] {
                guard let index = key.intValue, array.indices.contains(index) else { return nil }
                value = array[index]
            } else if let object = value as? [String: Any] {
                guard let member = object[key.stringValue] else { return nil }
                value = member
            } else {
                return nil
            }
        }
        switch value {
        case is NSNull: return "null"
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        case let number as NSNumber:
            // JSONSerialization's booleans are chars, its integers long longs.
            switch String(cString: number.objCType) {
            case "c", "B": return "a boolean"
            case "d", "f": return number.doubleValue.rounded() == number.doubleValue ? "a number" : "a decimal number"
            default: return "an integer"
            }
        default: return nil
        }
    }
}

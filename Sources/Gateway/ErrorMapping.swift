import HTTPTypes
import Hummingbird
import Inference
import Logging
import Metering
import Tenancy

/// Every error of the layers below, as the OpenAI-shaped HTTP error a client gets: the one
/// place that decides statuses, types and codes.
enum ErrorMapping {
    static func map(_ error: MeteringError) -> OpenAIError {
        switch error {
        case .rateLimited(let message, let retryAfter, let report):
            OpenAIError(
                status: .tooManyRequests, message: message, type: "requests", code: "rate_limit_exceeded",
                headers: InferencePipeline.rateLimitHeaders(report).merging([.retryAfter: String(retryAfter)]))
        case .quotaExceeded(let message):
            OpenAIError(status: .tooManyRequests, message: message, type: "insufficient_quota", code: "insufficient_quota")
        case .unavailable(let message):
            .unavailable(message, retryAfterSeconds: 1)
        case .invalid(let field, let message):
            .invalidRequest("\(field): \(message)", param: field)
        case .notFound(let message):
            .notFound(message)
        }
    }

    static func map(_ error: GenerationError) -> OpenAIError {
        switch error {
        case .invalidParameter(let name, let message): .invalidRequest("\(name): \(message)", param: name)
        case .contextExceeded(let prompt, let requested, let context):
            // The prompt alone is too long, or it fits and max_tokens asks too much.
            .invalidRequest(error.description, param: prompt < context && requested > 0 ? "max_tokens" : "prompt", code: "context_length_exceeded")
        case .emptyPrompt: .invalidRequest(error.description, param: "prompt")
        // Spread over 1-3 s: clients refused together by a full queue do not all come back together.
        case .overloaded(let message): .unavailable("The model is overloaded: \(message)", retryAfterSeconds: Int.random(in: 1...3))
        case .cancelled: OpenAIError(status: .serviceUnavailable, message: "The request was cancelled.", type: "server_error", code: "cancelled")
        }
    }

    static func map(_ error: ImageError, param: String) -> OpenAIError {
        switch error {
        case .unsupportedType: OpenAIError(status: .unsupportedMediaType, message: error.description, type: "invalid_request_error", param: param, code: "unsupported_image_type")
        case .tooLarge: OpenAIError(status: .contentTooLarge, message: error.description, type: "invalid_request_error", param: param, code: "image_too_large")
        case .corrupt: .invalidRequest(error.description, param: param, code: "invalid_image")
        }
    }

    static func map(_ error: AuthenticationError) -> OpenAIError {
        switch error {
        case .missingKey, .malformedKey, .invalidKey:
            OpenAIError(status: .unauthorized, message: error.message, type: "invalid_request_error", code: "invalid_api_key")
        case .tenantSuspended:
            OpenAIError(status: .forbidden, message: error.message, type: "permission_error", code: "tenant_suspended")
        case .unavailable:
            .unavailable(error.message, retryAfterSeconds: 1)
        }
    }

    static func map(_ failure: StorageFailure, logger: Logger) -> OpenAIError {
        switch failure {
        case .unavailable(let kind):
            logger.warning("database unavailable", metadata: ["error": "\(kind)"])
            return .unavailable("The service is temporarily unavailable (database unreachable); retry shortly.", retryAfterSeconds: 1)
        case .timedOut:
            return OpenAIError(status: .gatewayTimeout, message: "The request took too long and was cancelled.", type: "server_error", code: "timeout")
        case .duplicate:
            logger.notice("database refused a duplicate value")
            return OpenAIError(status: .conflict, message: "A resource with these values already exists.", type: "invalid_request_error", code: "conflict")
        case .invalidValue(let reason):
            // The request's values, not the server, are at fault: a gap in validation is not a 500.
            logger.notice("database refused a value")
            return OpenAIError.invalidRequest("The request was refused: \(reason).", param: nil)
        case .keyring(let description):
            logger.error("keyring error", metadata: ["error": "\(description)"])
            return OpenAIError(status: .internalServerError, message: "internal server error", type: "server_error")
        }
    }

    static func map(_ error: TenancyError) -> OpenAIError {
        switch error {
        case .notFound(let message): OpenAIError(status: .notFound, message: message, type: "invalid_request_error", code: "not_found")
        case .conflict(let message): OpenAIError(status: .conflict, message: message, type: "invalid_request_error", code: "conflict")
        case .invalid(let field, let message): .invalidRequest("\(field): \(message)", param: field)
        case .forbidden(let message): OpenAIError(status: .forbidden, message: message, type: "permission_error", code: "forbidden")
        case .notGrantable(let field, let message):
            OpenAIError(status: .forbidden, message: message, type: "permission_error", param: field, code: "insufficient_scope")
        }
    }

    static func map(_ error: HTTPError) -> OpenAIError {
        switch error.status {
        case .notFound:
            return OpenAIError(status: .notFound, message: error.body ?? "unknown route", type: "invalid_request_error", code: "not_found")
        case .contentTooLarge:
            return OpenAIError(status: .contentTooLarge, message: "request body too large", type: "invalid_request_error", code: "request_too_large")
        case .methodNotAllowed:
            return OpenAIError(status: .methodNotAllowed, message: "method not allowed", type: "invalid_request_error")
        default:
            let type = error.status.code >= 500 ? "server_error" : "invalid_request_error"
            return OpenAIError(status: error.status, message: error.body ?? error.status.reasonPhrase, type: type)
        }
    }
}

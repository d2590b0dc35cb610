import Encryption
import Hummingbird
import Inference
import Logging
import Metering
import NIOCore
import Postgres
import Tenancy

/// Maps every error to an OpenAI-shaped JSON body: Hummingbird's own errors (unknown route,
/// body too large, undecodable JSON) keep their status; anything unexpected becomes a 500 whose
/// details go to the log, never to the client.
struct ErrorMappingMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as OpenAIError {
            throw error
        } catch let error as HTTPError {
            throw Self.map(error)
        } catch let error as TenancyError {
            throw Self.map(error)
        } catch let error as AuthenticationError {
            throw AuthenticationMiddleware.map(error)
        } catch let error as MeteringError {
            throw InferencePipeline.map(error)
        } catch let error as GenerationError {
            throw InferencePipeline.map(error)
        } catch let error as ImageError {
            throw InferencePipeline.map(error, param: "image")
        } catch let error as ModelLoadError {
            throw OpenAIError(status: .unprocessableContent, message: error.description, type: "invalid_request_error", code: "model_load_failed")
        } catch let error as PostgresError where error.isConnectionError || error.kind == .poolTimeout || error.kind == .poolClosed {
            context.logger.warning("database unavailable", metadata: ["error": "\(error.kind.rawValue)"])
            throw OpenAIError.unavailable("The service is temporarily unavailable (database unreachable); retry shortly.", retryAfterSeconds: 1)
        } catch let error as PostgresError where error.isQueryCanceled {
            throw OpenAIError(status: .gatewayTimeout, message: "The request took too long and was cancelled.", type: "server_error", code: "timeout")
        } catch let error as PostgresError where error.sqlState?.hasPrefix("22") == true || error.sqlState?.hasPrefix("23") == true {
            // A data exception (a value the column cannot hold) or a constraint the value breaks:
            // the request's values, not the server, are at fault. Validation should have caught
            // it first; this keeps a gap in validation from becoming a 500.
            context.logger.notice("database refused a value", metadata: ["sqlstate": "\(error.sqlState ?? "")"])
            if error.isUniqueViolation {
                throw OpenAIError(status: .conflict, message: "A resource with these values already exists.", type: "invalid_request_error", code: "conflict")
            }
            let reason = error.sqlState == "22021" ? "a text value contains a NUL character or invalid UTF-8" : "a value is out of range or invalid"
            throw OpenAIError.invalidRequest("The request was refused: \(reason).", param: nil)
        } catch is NIOTooManyBytesError {
            throw Self.map(HTTPError(.contentTooLarge))  // the body streamed past its limit: as Hummingbird's own 413
        } catch let error as KeyringError {
            context.logger.error("keyring error", metadata: ["error": "\(error)"])
            throw OpenAIError(status: .internalServerError, message: "internal server error", type: "server_error")
        } catch is CancellationError {
            throw OpenAIError(status: .serviceUnavailable, message: "The request was cancelled.", type: "server_error", code: "cancelled")
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            throw OpenAIError(status: .internalServerError, message: "internal server error", type: "server_error")
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

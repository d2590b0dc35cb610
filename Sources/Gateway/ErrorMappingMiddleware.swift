import Hummingbird
import Inference
import Logging
import Metering
import NIOCore
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
            throw ErrorMapping.map(error)
        } catch let error as TenancyError {
            throw ErrorMapping.map(error)
        } catch let error as AuthenticationError {
            throw ErrorMapping.map(error)
        } catch let error as MeteringError {
            throw ErrorMapping.map(error)
        } catch let error as GenerationError {
            throw ErrorMapping.map(error)
        } catch let error as ImageError {
            throw ErrorMapping.map(error, param: "image")
        } catch let error as ModelLoadError {
            throw OpenAIError(status: .unprocessableContent, message: error.description, type: "invalid_request_error", code: "model_load_failed")
        } catch is NIOTooManyBytesError {
            throw ErrorMapping.map(HTTPError(.contentTooLarge))  // the body streamed past its limit: as Hummingbird's own 413
        } catch let error where StorageFailure(error) != nil {
            throw ErrorMapping.map(StorageFailure(error) ?? .timedOut, logger: context.logger)
        } catch is CancellationError {
            throw OpenAIError(status: .serviceUnavailable, message: "The request was cancelled.", type: "server_error", code: "cancelled")
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            throw OpenAIError(status: .internalServerError, message: "internal server error", type: "server_error")
        }
    }



}

import Foundation
import Metering
import Tenancy

/// What the inference pipeline needs of metering: `Meter` in the server, a fake in the
/// pipeline's own tests (which need no database).
protocol InferenceMetering: Sendable {
    func precheck(_ caller: MeteredCaller, tokens: Int) throws
    func admit(_ estimate: UsageEstimate, caller: MeteredCaller) async throws -> Admission
    func settle(_ record: SettlementRecord) async
    func cancel(_ admission: Admission) async
}

/// What the pipeline needs of the `Idempotency-Key` store.
protocol IdempotentResponses: Sendable {
    func begin(tenant: UUID, key: String, body: [UInt8], waitSeconds: Double) async throws -> IdempotencyStore.Outcome
    func complete(tenant: UUID, key: String, status: Int, body: [UInt8], requestID: String) async throws
    func abandon(tenant: UUID, key: String) async
}

/// What the pipeline needs of the payload log.
protocol PayloadRecording: Sendable {
    func record(tenant: UUID, requestID: String, model: String, route: String, status: Int, request: [UInt8], response: [UInt8]?) async throws
}

extension Meter: InferenceMetering {}
extension IdempotencyStore: IdempotentResponses {}
extension PayloadLog: PayloadRecording {}

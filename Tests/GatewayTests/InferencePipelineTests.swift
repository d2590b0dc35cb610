import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Inference
import Metering
import NIOCore
import Synchronization
import Testing
import TestSupport
@testable import Gateway
@testable import Tenancy

/// The inference pipeline's phases, without a database: metering, idempotency and the payload
/// log are fakes behind the pipeline's own protocols, the model is the repository's demo model,
/// and the route is one added here by only decoding a request and encoding its work — it gets
/// every phase. For each phase a failure is injected; an admitted request is settled exactly
/// once whatever ends it, a refused one never.
@Suite struct InferencePipelineTests {
    // MARK: Fakes

    final class FakeMeter: InferenceMetering {
        struct State {
            var admitted = 0
            var settled: [SettlementRecord] = []
            var cancelled = 0
        }
        let state = Mutex(State())
        let refusePrecheck: Bool
        let refuseAdmission: Bool

        init(refusePrecheck: Bool = false, refuseAdmission: Bool = false) {
            self.refusePrecheck = refusePrecheck
            self.refuseAdmission = refuseAdmission
        }

        func precheck(_ caller: MeteredCaller, tokens: Int) throws {
            if refusePrecheck { throw MeteringError.rateLimited(message: "over the rate", retryAfterSeconds: 3) }
        }

        func admit(_ estimate: UsageEstimate, caller: MeteredCaller) async throws -> Admission {
            if refuseAdmission { throw MeteringError.quotaExceeded("over the quota") }
            state.withLock { $0.admitted += 1 }
            return Admission(requestID: estimate.requestID, tenantID: caller.tenantID, keyID: caller.keyID, rateLimits: RateLimitReport())
        }

        func settle(_ record: SettlementRecord) async { state.withLock { $0.settled.append(record) } }
        func cancel(_ admission: Admission) async { state.withLock { $0.cancelled += 1 } }

        var snapshot: State { state.withLock { $0 } }
    }

    final class FakeIdempotency: IdempotentResponses {
        let stored = Mutex<[String: (status: Int, body: [UInt8])]>([:])
        let hashes = Mutex<[String: [UInt8]]>([:])
        let abandoned = Atomic<Int>(0)

        func begin(tenant: UUID, key: String, body: [UInt8], waitSeconds: Double) async throws -> IdempotencyStore.Outcome {
            if let known = hashes.withLock({ $0[key] }), known != body { return .conflict }
            if let done = stored.withLock({ $0[key] }) { return .replay(status: done.status, body: done.body) }
            hashes.withLock { $0[key] = body }
            return .proceed
        }

        func complete(tenant: UUID, key: String, status: Int, body: [UInt8], requestID: String) async throws {
            stored.withLock { $0[key] = (status, body) }
        }

        func abandon(tenant: UUID, key: String) async {
            abandoned.add(1, ordering: .relaxed)
            hashes.withLock { $0[key] = nil }
        }
    }

    final class FakePayloadLog: PayloadRecording {
        let entries = Mutex<[(route: String, status: Int, response: [UInt8]?)]>([])

        func record(tenant: UUID, requestID: String, model: String, route: String, status: Int, request: [UInt8], response: [UInt8]?) async throws {
            entries.withLock { $0.append((route, status, response)) }
        }
    }

    /// Sets the caller, as the authentication middleware would.
    struct FakeAuthentication: RouterMiddleware {
        typealias Context = GatewayRequestContext
        let principal: Principal

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            var context = context
            context.principal = principal
            return try await next(request, context)
        }
    }

    static let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("models").path

    static func registry() async throws -> ModelRegistry {
        let registry = ModelRegistry(directory: models)
        try await registry.load("shakespeare")
        return registry
    }

    static let principal = Principal(
        keyID: UUID(), keyPrefix: "mgk_testtest", tenantID: UUID(), tenantSlug: "acme", tenantStatus: .active, tenantPlan: "p",
        scopes: [.inference], allowedModels: [], limits: [:], expiresAt: nil, payloadLogging: true)

    // MARK: The route a test adds: decoding and encoding only

    /// What the work does, chosen per request by the `x-work` header.
    enum Work: String {
        case answer, engineError, refusedInput, slow, prepareError, stream, endlessStream
    }

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func raise() { value.store(true, ordering: .relaxed) }
        var isRaised: Bool { value.load(ordering: .relaxed) }
    }

    struct Pipeline {
        let meter: FakeMeter
        let idempotency = FakeIdempotency()
        let payloads = FakePayloadLog()
        let producerStopped = Flag()
    }

    static func app(_ setup: Pipeline, registry: ModelRegistry) -> some ApplicationProtocol {
        let pipeline = InferencePipeline(
            registry: registry, meter: setup.meter, idempotency: setup.idempotency, payloadLog: setup.payloads, maxBodyBytes: 1 << 20,
            // Far above what the quick works take on a loaded machine (a CI run cut a 3-chunk
            // stream at 500 ms); the slow work sleeps past it.
            requestTimeout: .seconds(5), dropUnsupportedParams: false)
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: ErrorMappingMiddleware())
        router.add(middleware: FakeAuthentication(principal: principal))
        let stopped = setup.producerStopped
        router.post("work") { request, context in
            try await pipeline.serve(request, context, route: "/work") { body, request in
                struct Body: Decodable { var model: String; var tools: JSONValue? }
                let decoded = try JSONBody.decode(Body.self, body)
                let work = Work(rawValue: request.headers[HTTPField.Name("x-work")!] ?? "") ?? .answer
                return InferenceCall(
                    model: decoded.model, task: .textGeneration, optionalParameters: decoded.tools.map { ["tools": $0] } ?? [:],
                    streams: work == .stream || work == .endlessStream
                ) { _, _ in
                    if work == .prepareError { throw OpenAIError.invalidRequest("bad prompt", param: "prompt") }
                    return PreparedWork(worstCase: .generation(promptTokens: 3, maxTokens: 5, choices: 1, prompts: 1)) { context in
                        context.tally.setPrompt(3)
                        switch work {
                        case .answer, .prepareError:
                            context.tally.addCompletion(5)
                            return .body(Array(#"{"ok":true}"#.utf8))
                        case .engineError:
                            context.tally.addCompletion(2)
                            throw GenerationError.cancelled
                        case .refusedInput:
                            throw RefusedInput(error: .invalidRequest("not an image", param: "image"))
                        case .slow:
                            try await Task.sleep(for: .seconds(60))
                            return .body([])
                        case .stream, .endlessStream:
                            let (chunks, output) = AsyncThrowingStream.makeStream(of: EventChunk.self)
                            let producer = Task {
                                for index in 0..<(work == .stream ? 3 : Int.max) {
                                    output.yield(EventChunk(bytes: ByteBuffer(string: "data: \(index)\n\n"), completionTokens: 1))
                                    try? await Task.sleep(for: .milliseconds(work == .stream ? 1 : 20))
                                    if Task.isCancelled { break }
                                }
                                output.finish()
                            }
                            output.onTermination = { _ in
                                producer.cancel()
                                stopped.raise()
                            }
                            return .events(chunks)
                        }
                    }
                }
            }
        }
        return Application(router: router)
    }

    static func post(
        _ client: some TestClientProtocol, _ work: Work, body: String = #"{"model": "shakespeare"}"#, headers: HTTPFields = [:]
    ) async throws -> (status: Int, body: String, headers: HTTPFields) {
        var fields = headers
        fields[HTTPField.Name("x-work")!] = work.rawValue
        fields[.contentType] = "application/json"
        return try await client.execute(uri: "/work", method: .post, headers: fields, body: ByteBuffer(string: body)) { response in
            (Int(response.status.code), String(buffer: response.body), response.headers)
        }
    }

    // MARK: Tests

    @Test func everyExitOfAnAdmittedRequestSettlesItOnce() async throws {
        let registry = try await Self.registry()
        let setup = Pipeline(meter: FakeMeter())
        try await Self.app(setup, registry: registry).test(.live) { client in
            let answered = try await Self.post(client, .answer)
            #expect(answered.status == 200, "\(answered.body)")
            let failed = try await Self.post(client, .engineError)
            #expect(failed.status == 503)
            let late = try await Self.post(client, .slow)
            #expect(late.status == 504, "\(late.body)")
            let streamed = try await Self.post(client, .stream)
            #expect(streamed.status == 200 && streamed.body.contains("data: 2"))
            // Settlement of a stream happens as its last byte goes out: wait for it, with a deadline.
            let deadline = ContinuousClock.now + .seconds(10)
            while setup.meter.snapshot.settled.count < 4, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            let state = setup.meter.snapshot
            #expect(state.admitted == 4)
            #expect(state.settled.map(\.status) == [200, 503, 504, 200], "\(state.settled.map(\.status))")
            #expect(state.settled.map(\.completionTokens) == [5, 2, 0, 3])
            #expect(Set(state.settled.map(\.requestID)).count == 4, "one settlement per request")
            #expect(state.cancelled == 0)
            // The answered and streamed requests were payload-logged (the caller opted in).
            #expect(setup.payloads.entries.withLock { $0.map(\.status) }.sorted() == [200, 200, 503, 504])
        }
    }

    /// Settlement is once by construction: however many exits race to settle, one record.
    @Test func aSettlementSettlesOnceHoweverManyExitsCallIt() async throws {
        let registry = try await Self.registry()
        let meter = FakeMeter()
        let pipeline = InferencePipeline(
            registry: registry, meter: meter, idempotency: FakeIdempotency(), payloadLog: FakePayloadLog(), maxBodyBytes: 1024,
            requestTimeout: .seconds(1), dropUnsupportedParams: false)
        let (_, engine) = try #require(registry.engine("shakespeare"))
        let settlement = Settlement(
            pipeline: pipeline, admission: Admission(requestID: "r", tenantID: UUID(), keyID: UUID(), rateLimits: RateLimitReport()),
            principal: Self.principal, model: "shakespeare", route: "/work", access: AccessRecord(), started: .now, tally: UsageTally(),
            permit: try await engine.shares.acquire(key: "t"))
        await withTaskGroup(of: Void.self) { group in
            for status in [200, 499, 504, 503] { group.addTask { await settlement.settle(status: status) } }
            group.addTask { await settlement.cancel() }
        }
        let state = meter.snapshot
        #expect(state.settled.count + state.cancelled == 1)
    }

    /// Deadlines are kept by one sleeper: a thousand requests that finish in time start one,
    /// not a sleeping task (and a timer that outlives its cancellation) each.
    @Test func requestsUnderADeadlineShareOneSleeper() async throws {
        let registry = try await Self.registry()
        let pipeline = InferencePipeline(
            registry: registry, meter: FakeMeter(), idempotency: FakeIdempotency(), payloadLog: FakePayloadLog(), maxBodyBytes: 1024,
            requestTimeout: .seconds(60), dropUnsupportedParams: false)
        for index in 0..<1000 {
            let answer = try await pipeline.withDeadline { index }
            #expect(answer == index)
        }
        #expect(pipeline.deadlines.sleepersStarted == 1)
    }

    /// A deadline that passes cancels the work, waits for it to end and answers 504; one that
    /// is finished in time never fires.
    @Test func aDeadlineThatPassesCancelsTheWorkOnce() async throws {
        let deadlines = Deadlines(timeout: .milliseconds(100))
        let fired = Mutex(0)
        let early = deadlines.start { Issue.record("a finished deadline fired") }
        #expect(deadlines.finish(early))
        let late = deadlines.start { fired.withLock { $0 += 1 } }
        #expect(await eventually(within: .seconds(30)) { fired.withLock { $0 } == 1 })
        #expect(!deadlines.finish(late), "an expired ticket reports it")
        try await Task.sleep(for: .milliseconds(300))
        #expect(fired.withLock { $0 } == 1)

        let registry = try await Self.registry()
        let pipeline = InferencePipeline(
            registry: registry, meter: FakeMeter(), idempotency: FakeIdempotency(), payloadLog: FakePayloadLog(), maxBodyBytes: 1024,
            requestTimeout: .milliseconds(100), dropUnsupportedParams: false)
        let stopped = Flag()
        await #expect(throws: OpenAIError.self) {
            try await pipeline.withDeadline {
                do { try await Task.sleep(for: .seconds(60)) } catch { stopped.raise() }
            }
        }
        #expect(stopped.isRaised, "the work was cancelled and its end awaited")
    }

    @Test func refusalsBeforeAdmissionCostNothing() async throws {
        let registry = try await Self.registry()
        for (meter, work, body, status) in [
            (FakeMeter(refusePrecheck: true), Work.answer, #"{"model": "shakespeare"}"#, 429),  // before the body is read
            (FakeMeter(), .answer, #"{"model": "shakespeare", "modle": 1}"#, 400),  // strict decoding
            (FakeMeter(), .answer, #"{"model": "nope"}"#, 404),  // authorisation
            (FakeMeter(), .answer, #"{"model": "shakespeare", "tools": [1]}"#, 400),  // the engine's parameters
            (FakeMeter(), .prepareError, #"{"model": "shakespeare"}"#, 400),  // preparation
            (FakeMeter(refuseAdmission: true), .answer, #"{"model": "shakespeare"}"#, 429),  // admission itself
        ] {
            let setup = Pipeline(meter: meter)
            try await Self.app(setup, registry: registry).test(.live) { client in
                let result = try await Self.post(client, work, body: body)
                #expect(result.status == status, "\(body): \(result.body)")
                let state = setup.meter.snapshot
                #expect(state.settled.isEmpty && state.cancelled == 0, "\(body): refused requests are never settled")
                #expect(state.admitted == 0 || status == 200)
            }
        }
    }

    @Test func inputFoundUnusableAfterAdmissionCancelsInsteadOfBilling() async throws {
        let registry = try await Self.registry()
        let setup = Pipeline(meter: FakeMeter())
        try await Self.app(setup, registry: registry).test(.live) { client in
            let result = try await Self.post(client, .refusedInput, headers: [HTTPField.Name("Idempotency-Key")!: "k1"])
            #expect(result.status == 400)
            let state = setup.meter.snapshot
            #expect(state.admitted == 1 && state.cancelled == 1 && state.settled.isEmpty)
            #expect(setup.idempotency.abandoned.load(ordering: .relaxed) == 1, "a retry may run again")
        }
    }

    @Test func idempotentRetriesReplayWithoutAdmission() async throws {
        let registry = try await Self.registry()
        let setup = Pipeline(meter: FakeMeter())
        try await Self.app(setup, registry: registry).test(.live) { client in
            let key: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "k2"]
            let first = try await Self.post(client, .answer, headers: key)
            let again = try await Self.post(client, .answer, headers: key)
            #expect(first.status == 200 && again.status == 200 && again.body == first.body)
            #expect(again.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            let other = try await Self.post(client, .answer, body: #"{"model": "shakespeare", "tools": []}"#, headers: key)
            #expect(other.status == 409)
            #expect(setup.meter.snapshot.admitted == 1 && setup.meter.snapshot.settled.count == 1)
            let streamed = try await Self.post(client, .stream, headers: [HTTPField.Name("Idempotency-Key")!: "k3"])
            #expect(streamed.status == 400, "Idempotency-Key with a stream: \(streamed.body)")
        }
    }

    /// A client that goes away mid-stream: the work is stopped and the request settled once,
    /// as 499, with what was sent.
    @Test func aClientThatLeavesMidStreamStopsTheWorkAndIsSettledOnce() async throws {
        let registry = try await Self.registry()
        let setup = Pipeline(meter: FakeMeter())
        try await Self.app(setup, registry: registry).test(.live) { client in
            let port = try #require(client.port)
            let socket = try RawSocket(port: port)
            let body = #"{"model": "shakespeare"}"#
            socket.send("POST /work HTTP/1.1\r\nHost: localhost\r\nx-work: endlessStream\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            #expect(socket.receive(until: "data: 2"), "the stream began")
            socket.close()
            let deadline = ContinuousClock.now + .seconds(10)
            while setup.meter.snapshot.settled.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            let state = setup.meter.snapshot
            #expect(state.settled.map(\.status) == [499])
            #expect((state.settled.first?.completionTokens ?? 0) >= 3)
            #expect(setup.producerStopped.isRaised, "the work was cancelled")
            try await Task.sleep(for: .milliseconds(100))
            #expect(setup.meter.snapshot.settled.count == 1)
        }
    }
}

/// A blocking TCP connection, for a client that leaves in the middle of a response.
final class RawSocket {
    let descriptor: Int32

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }

    /// Reads until `marker` has arrived (true) or the connection ends or times out (false).
    func receive(until marker: String) -> Bool {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            guard count > 0 else { return false }
            received += buffer[0..<count]
            if String(decoding: received, as: UTF8.self).contains(marker) { return true }
        }
    }

    func close() { Glibc.close(descriptor) }
}

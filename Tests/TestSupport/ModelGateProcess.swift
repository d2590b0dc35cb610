import Foundation
import Synchronization
import Postgres

/// The real `modelgate` binary, run as a child process in a directory of the test's choosing.
public final class ModelGateProcess: Sendable {
    public let child: ChildProcess
    public let directory: String
    public let port: Int

    /// Path of the built binary (next to the test bundle), or `MODELGATE_BINARY`.
    public static var binaryPath: String {
        if let configured = ProcessInfo.processInfo.environment["MODELGATE_BINARY"] { return configured }
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        if directory.pathExtension == "xctest" { directory = directory.deletingLastPathComponent() }
        return directory.appendingPathComponent("modelgate").path
    }

    /// The environment for a child: this process's, minus every MODELGATE_ setting.
    public static func cleanEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("MODELGATE_") }
        for key in ["MODELGATE_PG_USER", "MODELGATE_PG_BIN"] {
            if let value = ProcessInfo.processInfo.environment[key] { environment[key] = value }
        }
        for (key, value) in extra { environment[key] = value }
        return environment
    }

    /// Runs a one-shot command and returns (status, stdout and stderr together).
    public static func run(
        _ arguments: [String], in directory: String, environment: [String: String] = [:]
    ) async throws -> (status: Int32, output: String) {
        let binary = binaryPath
        let environment = cleanEnvironment(environment)
        return try await onOwnThread { try ChildProcess.run(binary, arguments, environment: environment, workingDirectory: directory) }
    }

    /// Starts `modelgate serve` on a free port; its output is collected in `log`.
    public init(arguments: [String] = ["serve"], in directory: String, environment: [String: String] = [:]) throws {
        self.directory = directory
        self.port = try FreePort.find()
        var extra = environment
        extra["MODELGATE_SERVER_PORT"] = String(port)
        child = try ChildProcess(
            executable: Self.binaryPath, arguments: arguments, environment: Self.cleanEnvironment(extra),
            workingDirectory: directory,
            outputPath: NSTemporaryDirectory() + "modelgate-serve-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
    }

    public var log: String { child.output }
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    public var isRunning: Bool { child.isRunning }

    public func signal(_ signal: Int32) { child.signal(signal) }

    /// Waits for the process to exit (up to `timeout`) and returns its status, or nil.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = child.poll() { return status }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    deinit {
        if child.poll() == nil {
            child.signal(SIGKILL)
            child.wait()
        }
        try? FileManager.default.removeItem(atPath: child.outputPath)
    }
}

public enum FreePort {
    /// Ports this test process has handed out: the kernel may give a released port to the next
    /// bind to port 0, and two servers started by tests running in parallel once got the same
    /// one. The second could not bind, and its test's requests went to the other test's server
    /// (401 for an unknown key, then connection refused when that test stopped it).
    private static let handedOut = Mutex<Set<Int>>([])

    /// A TCP port that was free a moment ago (bound to port 0, then released) and that no other
    /// caller in this process got.
    public static func find() throws -> Int {
        for _ in 0..<100 {
            let port = try unbound()
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw POSIXError(.EADDRINUSE)
    }

    private static func unbound() throws -> Int {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketDescriptor >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(socketDescriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketDescriptor, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketDescriptor, $0, &length) }
        }
        guard named == 0 else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Runs blocking work (waiting for a child process) on a thread of its own, so that it does not
/// hold one of the few cooperative threads that tests running in parallel need.
public func onOwnThread<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

import Foundation

/// A child process started with `posix_spawn`: stdin from /dev/null, stdout and stderr to a
/// file, and every other descriptor closed in the child.
///
/// Used instead of Foundation's `Process` to run PostgreSQL's programs: `pg_ctl start` leaves a
/// server running that would otherwise inherit our descriptors, and `Process` could then wait
/// forever for a child that already exited.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let outputPath: String
    private var exitStatus: Int32?
    private let lock = NSLock()

    /// Spawns `executable` with `arguments`; output (stdout and stderr) is appended to `outputPath`.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, outputPath: String
    ) throws {
        self.outputPath = outputPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        if let closeFrom = GlibcSpawnExtensions.closeFrom { _ = closeFrom(&actions, 3) }
        if let workingDirectory {
            guard let changeDirectory = GlibcSpawnExtensions.changeDirectory else {
                throw PostgresError(.localCluster, "posix_spawn cannot change directory on this system")
            }
            _ = changeDirectory(&actions, workingDirectory)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default signal dispositions and an unblocked mask in the child, whatever ours are.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) }
        let environmentEntries = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            environmentEntries.forEach { free($0) }
        }
        var argvPointers = argv + [nil]
        var environmentPointers = environmentEntries + [nil]
        var child: pid_t = 0
        let status = posix_spawn(&child, executable, &actions, &attributes, &argvPointers, &environmentPointers)
        guard status == 0 else {
            throw PostgresError(.localCluster, "cannot run \(executable): \(String(cString: strerror(status)))")
        }
        pid = child
    }

    /// Blocks until the child exits; returns its exit status (128 + signal when killed).
    @discardableResult
    public func wait() -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let result = Self.decode(status)
        exitStatus = result
        return result
    }

    /// The exit status if the child has exited, without blocking.
    public func poll() -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let result = Self.decode(status)
        exitStatus = result
        return result
    }

    public var isRunning: Bool { poll() == nil }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// The output written so far.
    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    private static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        if signal == 0 { return (status >> 8) & 0xff }
        return 128 + signal
    }

    /// Runs a program to completion and returns its exit status and output.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil
    ) throws -> (status: Int32, output: String) {
        let path = NSTemporaryDirectory() + "modelgate-child-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let child = try ChildProcess(
            executable: executable, arguments: arguments, environment: environment,
            workingDirectory: workingDirectory, outputPath: path)
        let status = child.wait()
        return (status, child.output)
    }
}

/// glibc's `posix_spawn` extensions (2.29+/2.34+), which Swift's Glibc module does not import
/// because they sit behind `_GNU_SOURCE`; looked up once at run time.
enum GlibcSpawnExtensions {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias ChangeDirectory = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    static let closeFrom: CloseFrom? = symbol("posix_spawn_file_actions_addclosefrom_np")
    static let changeDirectory: ChangeDirectory? = symbol("posix_spawn_file_actions_addchdir_np")

    private static func symbol<Function>(_ name: String) -> Function? {
        // RTLD_DEFAULT is the null handle on glibc.
        guard let address = dlsym(nil, name) else { return nil }
        return unsafeBitCast(address, to: Function.self)
    }
}

import Foundation
import Logging

/// A PostgreSQL cluster owned by ModelGate in a directory of its own, reachable only through a
/// Unix socket: the zero-config database of `modelgate serve` and the throwaway database of
/// the test suite.
///
/// PostgreSQL refuses to run as root, so when invoked as root the server runs as the `postgres`
/// user (override with `MODELGATE_PG_USER`). If that user cannot reach the requested directory
/// (a home directory closed to others), the cluster lives under `/var/tmp` instead and the
/// chosen place is reported in `directory`.
public struct LocalPostgresCluster: Sendable {
    public struct Options: Sendable {
        /// Durable by default; the test suite turns fsync off for speed.
        public var durable: Bool = true
        public var maxConnections: Int = 200
        public var port: Int = 5432
        public init(durable: Bool = true, maxConnections: Int = 200, port: Int = 5432) {
            self.durable = durable
            self.maxConnections = maxConnections
            self.port = port
        }
    }

    /// The cluster's directory: `data/` (the cluster), `run/` (socket), `postgres.log`.
    public let directory: String
    public let options: Options
    let serverUser: String?
    let binDirectory: String
    let logger: Logger

    public init(directory requested: String, options: Options = Options(), logger: Logger = Logger(label: "modelgate.localdb")) throws {
        self.options = options
        self.logger = logger
        self.binDirectory = try Self.findBinDirectory()
        let user: String? = geteuid() == 0 ? (ProcessInfo.processInfo.environment["MODELGATE_PG_USER"] ?? "postgres") : nil
        self.serverUser = user
        let absolute = URL(fileURLWithPath: requested).standardizedFileURL.path
        if let user, !Self.userCanReach(absolute, user: user) {
            self.directory = "/var/tmp/modelgate-" + Self.shortHash(absolute)
        } else {
            self.directory = absolute
        }
    }

    var dataDirectory: String { directory + "/data" }
    var logFile: String { directory + "/postgres.log" }

    /// Where the server's socket lives; a short path under /tmp when the directory is too deep
    /// for a Unix socket name (about 100 bytes).
    public var socketDirectory: String {
        let preferred = directory + "/run"
        if preferred.utf8.count + 20 < 100 { return preferred }
        return "/tmp/modelgate-" + Self.shortHash(directory)
    }

    /// A libpq connection string for a database in this cluster.
    public func connectionString(database: String) -> String {
        "host='\(socketDirectory)' port=\(options.port) user=postgres dbname='\(database)'"
    }

    /// True when a server is running on this cluster's data directory.
    public var isRunning: Bool {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") else { return false }
        return (try? run(binDirectory + "/pg_ctl", ["status", "-D", dataDirectory])) != nil
    }

    /// Whether the cluster has been created (its data directory is initialised).
    public var exists: Bool { FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") }

    /// Creates the cluster on first use (unless `create` is false: then a missing cluster is an
    /// error), starts it unless it already runs, and creates `database` if missing. Returns
    /// true when this call started the server.
    @discardableResult
    public func start(database: String, create: Bool = true) throws -> Bool {
        guard create || exists else {
            throw PostgresError(.localCluster, "no local database in \(directory)")
        }
        let lock = try FileLock(path: try prepareDirectory() + "/.lock")
        defer { lock.release() }
        if !FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            logger.info("creating local PostgreSQL cluster", metadata: ["directory": "\(dataDirectory)"])
            var arguments = ["-D", dataDirectory, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"]
            if !options.durable { arguments.append("--no-sync") }
            try run(binDirectory + "/initdb", arguments)
        }
        var started = false
        if !isRunning {
            try makeSocketDirectory()
            var serverOptions = "-k '\(socketDirectory)' -p \(options.port) -c listen_addresses='' "
                + "-c unix_socket_permissions=0700 -c max_connections=\(options.maxConnections)"
            if !options.durable {
                serverOptions += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            }
            try run(binDirectory + "/pg_ctl", [
                "start", "-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "-o", serverOptions,
            ])
            started = true
        }
        try createDatabaseIfMissing(database)
        return started
    }

    /// Stops the server (fast shutdown: open transactions roll back). No-op when not running.
    public func stop() throws {
        guard isRunning else { return }
        try run(binDirectory + "/pg_ctl", ["stop", "-D", dataDirectory, "-m", "fast", "-w", "-t", "60"])
    }

    /// Restarts the server in place (existing connections break; pools must heal).
    public func restart() throws {
        try stop()
        try start(database: "postgres")
    }

    /// Stops the server and deletes the cluster's files.
    public func destroy() throws {
        try? stop()
        try? FileManager.default.removeItem(atPath: directory)
        if socketDirectory.hasPrefix("/tmp/modelgate-") { try? FileManager.default.removeItem(atPath: socketDirectory) }
    }

    // MARK: Helpers

    private func createDatabaseIfMissing(_ database: String) throws {
        let admin = try PostgresConnection(
            configuration: PostgresConfiguration(connectionString: connectionString(database: "postgres")))
        defer { admin.close() }
        let rows = try admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database])
        guard rows.isEmpty else { return }
        do {
            try admin.execute("CREATE DATABASE \(PostgresListener.quoteIdentifier(database))")
        } catch let error as PostgresError where error.sqlState == "42P04" || error.isUniqueViolation {
            // Created concurrently by another process: fine.
        }
    }

    /// Creates the cluster directory, owned by the server user.
    private func prepareDirectory() throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try chownToServerUser(directory)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory)
        return directory
    }

    private func makeSocketDirectory() throws {
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        try chownToServerUser(socketDirectory)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: socketDirectory)
    }

    private func chownToServerUser(_ path: String) throws {
        guard let serverUser else { return }
        guard let entry = getpwnam(serverUser) else {
            throw PostgresError(
                .localCluster,
                "running as root, the local database needs the '\(serverUser)' user (apt-get install postgresql creates it, or set MODELGATE_PG_USER)")
        }
        if chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) != 0 {
            throw PostgresError(.localCluster, "cannot hand \(path) to user \(serverUser): \(String(cString: strerror(errno)))")
        }
    }

    /// Runs a PostgreSQL program (as the server user when root); throws with its output on failure.
    @discardableResult
    func run(_ executable: String, _ arguments: [String]) throws -> String {
        let (program, argv) = serverUser.map { (Self.runuserPath, ["-u", $0, "--", executable] + arguments) }
            ?? (executable, arguments)
        let (status, text) = try ChildProcess.run(program, argv)
        guard status == 0 else {
            let name = (executable as NSString).lastPathComponent
            let lastLines = text.split(separator: "\n").suffix(3).joined(separator: "; ")
            throw PostgresError(.localCluster, "\(name) failed (exit \(status)): \(lastLines)")
        }
        return text
    }

    static var runuserPath: String {
        ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first { FileManager.default.isExecutableFile(atPath: $0) }
            ?? "/usr/sbin/runuser"
    }

    /// `MODELGATE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
    public static func findBinDirectory() throws -> String {
        let fileManager = FileManager.default
        var candidates: [String] = []
        if let configured = ProcessInfo.processInfo.environment["MODELGATE_PG_BIN"] { candidates.append(configured) }
        if let versions = try? fileManager.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            let sorted = versions.compactMap { Int($0) }.sorted(by: >)
            candidates += sorted.map { "/usr/lib/postgresql/\($0)/bin" }
        }
        candidates += ["/usr/local/pgsql/bin", "/usr/pgsql/bin", "/usr/bin", "/usr/local/bin"]
        for candidate in candidates where fileManager.isExecutableFile(atPath: candidate + "/initdb")
            && fileManager.isExecutableFile(atPath: candidate + "/pg_ctl") {
            return candidate
        }
        throw PostgresError(
            .localCluster,
            "PostgreSQL server programs (initdb, pg_ctl) not found; install them with 'apt-get install -y postgresql' "
                + "or set MODELGATE_PG_BIN, or configure an external database with MODELGATE_DATABASE_URL")
    }

    /// Whether `user` can reach `path`: we create what is missing as root (mode 0755) and hand
    /// the cluster directory itself to the user, so it needs to traverse the nearest existing
    /// ancestor of the directory's parent (and, implicitly, everything above it).
    static func userCanReach(_ path: String, user: String) -> Bool {
        var probe = (path as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: probe), probe != "/" {
            probe = (probe as NSString).deletingLastPathComponent
        }
        return (try? ChildProcess.run(runuserPath, ["-u", user, "--", "test", "-x", probe]).status) == 0
    }

    /// FNV-1a, 8 hex digits: short stable names derived from a path.
    static func shortHash(_ text: String) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in text.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return String(format: "%08x", hash)
    }
}

/// An exclusive `flock` on a file, so two processes do not initdb or start one cluster at once.
final class FileLock {
    private let descriptor: Int32

    init(path: String) throws {
        descriptor = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw PostgresError(.localCluster, "cannot open lock file \(path): \(String(cString: strerror(errno)))")
        }
        while flock(descriptor, LOCK_EX) != 0 && errno == EINTR {}
    }

    func release() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}

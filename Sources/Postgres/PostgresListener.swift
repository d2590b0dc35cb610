import Foundation
import Logging
import Synchronization

public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String

    public init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
}

public enum PostgresNotificationEvent: Sendable, Equatable {
    /// The LISTEN is active; notifications sent from now on will arrive.
    case listening
    /// A notification arrived.
    case notification(PostgresNotification)
    /// The connection was lost and restored; notifications sent meanwhile were missed.
    case reconnected
}

/// A dedicated connection and thread that LISTENs and forwards notifications to a stream.
enum PostgresListener {
    static func start(
        configuration: PostgresConfiguration, channels: [String], logger: Logger
    ) -> AsyncStream<PostgresNotificationEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: PostgresNotificationEvent.self)
        let stopped = StopFlag()
        continuation.onTermination = { _ in stopped.stop() }
        let thread = Thread {
            run(configuration: configuration, channels: channels, logger: logger,
                continuation: continuation, stopped: stopped)
        }
        thread.name = "pg-listen"
        thread.start()
        return stream
    }

    private static func run(
        configuration: PostgresConfiguration, channels: [String], logger: Logger,
        continuation: AsyncStream<PostgresNotificationEvent>.Continuation, stopped: StopFlag
    ) {
        var connection: PostgresConnection?
        var everConnected = false
        var backoffMilliseconds = 50
        defer {
            connection?.close()
            continuation.finish()
        }
        while !stopped.isStopped {
            if connection == nil {
                do {
                    let fresh = try PostgresConnection(configuration: configuration)
                    for channel in channels {
                        try fresh.execute("LISTEN \(quoteIdentifier(channel))")
                    }
                    connection = fresh
                    continuation.yield(everConnected ? .reconnected : .listening)
                    if everConnected { logger.info("notification listener reconnected") }
                    everConnected = true
                    backoffMilliseconds = 50
                } catch {
                    usleep(UInt32(backoffMilliseconds * 1000))
                    backoffMilliseconds = min(backoffMilliseconds * 2, 1000)
                    continue
                }
            }
            guard let current = connection else { continue }
            var descriptor = pollfd(fd: current.socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 100)
            if ready < 0 && errno != EINTR {
                connection = nil
                continue
            }
            do {
                for notification in try current.drainNotifications() {
                    continuation.yield(.notification(notification))
                }
            } catch {
                logger.warning("notification listener lost its connection; reconnecting")
                current.close()
                connection = nil
            }
        }
    }

    static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func stop() { flag.store(true, ordering: .relaxed) }
    var isStopped: Bool { flag.load(ordering: .relaxed) }
}

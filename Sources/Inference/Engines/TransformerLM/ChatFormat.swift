/// A chat message as a chat template sees it.
public struct ChatTurn: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// How a text model turns chat messages into its prompt, and where its answer ends. Models
/// without a template of their own get `plain`.
public struct ChatFormat: Sendable {
    /// The role names of the plain template.
    static let plainNames: [String: String] = [
        "system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool",
    ]

    /// `System: ...`, `User: ...`, `Assistant: ...` turns separated by blank lines, ending with
    /// `Assistant:`; generation stops at the next `\n\nUser:`.
    public static let plain = ChatFormat()

    /// Where generation stops besides the request's own stop sequences.
    public var stopSequences: [String] { ["\n\nUser:"] }

    /// The prompt for `turns`; throws naming the first message whose role the template does
    /// not know.
    public func render(_ turns: [ChatTurn]) throws -> String {
        guard !turns.isEmpty else { throw GenerationError.invalidParameter("messages", "must not be empty") }
        var text = ""
        for (index, turn) in turns.enumerated() {
            guard let name = Self.plainNames[turn.role] else {
                throw GenerationError.invalidParameter("messages[\(index)].role", "unknown role '\(turn.role)'")
            }
            text += "\(name): \(turn.content)\n\n"
        }
        return text + "Assistant:"
    }
}

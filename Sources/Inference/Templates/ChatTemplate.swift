import Foundation

/// A model's own chat template (the Jinja `chat_template` of its `tokenizer_config.json` or
/// GGUF metadata), rendered as transformers' `apply_chat_template(messages,
/// add_generation_prompt=True)` renders it: the same text, byte for byte, and the same
/// refusals (`raise_exception`). The result remembers which characters the template wrote, so
/// special tokens are recognised only there and never in what a user wrote.
package struct ChatTemplate: Sendable {
    package let source: String
    private let nodes: [JinjaNode]

    package init(source: String) throws {
        self.source = source
        nodes = try JinjaParser.parse(source)
    }

    /// A rendered conversation: the prompt, and per UTF-8 byte whether the template wrote it.
    package struct Rendered: Sendable, Equatable {
        package var text: String
        package var markup: [Bool]
    }

    /// Renders `turns` with the tokenizer's special tokens; `now` is what `strftime_now` sees.
    /// Throws `JinjaTemplateError` (with `raisedByTemplate` when the template refused the
    /// conversation).
    package func render(
        _ turns: [ChatTurn], specialTokens: [String: String], addGenerationPrompt: Bool = true, now: Date = Date()
    ) throws -> Rendered {
        var globals: [String: JinjaValue] = [
            "messages": .list(turns.map { .dictionary([("role", .string($0.role)), ("content", .string($0.content))]) }),
            "add_generation_prompt": .boolean(addGenerationPrompt),
            "tools": .none,
            "documents": .none,
            "raise_exception": .function("raise_exception") { arguments, _ in
                throw JinjaTemplateError(arguments.first?.text.string ?? "the chat template refused the conversation", raisedByTemplate: true)
            },
            "namespace": .function("namespace") { _, keywords in
                let namespace = JinjaNamespace()
                for (key, value) in keywords { namespace.attributes[key] = value }
                return .namespace(namespace)
            },
            "strftime_now": .function("strftime_now") { arguments, _ in
                .string(Self.strftime(arguments.first?.text.string ?? "", now), markup: true)
            },
            "range": .function("range") { arguments, _ in
                let bounds = arguments.compactMap { if case .integer(let n) = $0 { n } else { nil } }
                guard !bounds.isEmpty, bounds.count == arguments.count else { throw JinjaTemplateError("range() takes integers") }
                let (start, stop, step) = bounds.count == 1 ? (0, bounds[0], 1) : (bounds[0], bounds[1], bounds.count > 2 ? bounds[2] : 1)
                guard step != 0 else { throw JinjaTemplateError("range() step must not be zero") }
                return .list(Swift.stride(from: start, to: stop, by: step).prefix(100_000).map { .integer($0) })
            },
        ]
        for (name, token) in specialTokens { globals[name] = .string(token, markup: true) }
        var interpreter = JinjaInterpreter(globals: globals)
        try interpreter.run(nodes)
        let output = interpreter.output
        var markup: [Bool] = []
        markup.reserveCapacity(output.scalars.count)
        for (scalar, isMarkup) in zip(output.scalars, output.markup) {
            markup += Array(repeating: isMarkup, count: UTF8.width(scalar))
        }
        return Rendered(text: output.string, markup: markup)
    }

    /// Python's `datetime.strftime` for the directives chat templates use.
    static func strftime(_ format: String, _ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let month = months[(parts.month ?? 1) - 1], day = days[(parts.weekday ?? 1) - 1]
        func two(_ value: Int?) -> String { String(format: "%02d", value ?? 0) }
        var out = ""
        var scalars = format.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            guard scalar == "%" else {
                out.unicodeScalars.append(scalar)
                continue
            }
            switch scalars.next() {
            case "d": out += two(parts.day)
            case "m": out += two(parts.month)
            case "Y": out += String(parts.year ?? 0)
            case "y": out += two((parts.year ?? 0) % 100)
            case "b": out += String(month.prefix(3))
            case "B": out += month
            case "a": out += String(day.prefix(3))
            case "A": out += day
            case "H": out += two(parts.hour)
            case "M": out += two(parts.minute)
            case "S": out += two(parts.second)
            case "%": out += "%"
            case let other?: out += "%" + String(other)
            case nil: out += "%"
            }
        }
        return out
    }
}

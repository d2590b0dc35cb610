import Foundation

/// Text that remembers, per character, whether the template itself wrote it (markup: its
/// literals, `bos_token`...) or it came from the conversation. Special tokens are recognised
/// only in markup, so a user who types `<|im_end|>` gets those characters, not the token.
struct JinjaText: Equatable {
    var scalars: [Unicode.Scalar] = []
    var markup: [Bool] = []

    init() {}

    init(_ string: String, markup isMarkup: Bool) {
        scalars = Array(string.unicodeScalars)
        markup = Array(repeating: isMarkup, count: scalars.count)
    }

    init(scalars: ArraySlice<Unicode.Scalar>, markup: ArraySlice<Bool>) {
        self.scalars = Array(scalars)
        self.markup = Array(markup)
    }

    var string: String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    static func + (left: JinjaText, right: JinjaText) -> JinjaText {
        var result = left
        result.scalars += right.scalars
        result.markup += right.markup
        return result
    }

    static func == (left: JinjaText, right: JinjaText) -> Bool { left.scalars == right.scalars }

    func slice(_ range: Range<Int>) -> JinjaText { JinjaText(scalars: scalars[range], markup: markup[range]) }

    /// Python's `str.isspace` for one character.
    static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }

    /// `strip`, `lstrip`, `rstrip` with Python's defaults (whitespace) or a set of characters.
    func stripped(leading: Bool, trailing: Bool, characters: Set<Unicode.Scalar>?) -> JinjaText {
        let strip = { (scalar: Unicode.Scalar) in characters?.contains(scalar) ?? Self.isPythonSpace(scalar) }
        var start = 0, end = scalars.count
        if leading { while start < end, strip(scalars[start]) { start += 1 } }
        if trailing { while end > start, strip(scalars[end - 1]) { end -= 1 } }
        return slice(start..<end)
    }

    func firstIndex(of needle: [Unicode.Scalar], from start: Int = 0) -> Int? {
        guard !needle.isEmpty else { return start <= scalars.count ? start : nil }
        guard needle.count <= scalars.count else { return nil }
        var index = start
        while index + needle.count <= scalars.count {
            if scalars[index] == needle[0], Array(scalars[index..<(index + needle.count)]) == needle { return index }
            index += 1
        }
        return nil
    }
}

/// A value while a template runs: Python's values as Jinja sees them.
indirect enum JinjaValue {
    case undefined(String)
    case none
    case boolean(Bool)
    case integer(Int)
    case double(Double)
    case text(JinjaText)
    case list([JinjaValue])
    case dictionary([(key: String, value: JinjaValue)])
    case namespace(JinjaNamespace)
    case function(String, ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue)

    static func string(_ value: String, markup: Bool = false) -> JinjaValue { .text(JinjaText(value, markup: markup)) }

    var isDefined: Bool { if case .undefined = self { false } else { true } }

    /// Python truthiness.
    var truthy: Bool {
        switch self {
        case .undefined, .none: false
        case .boolean(let value): value
        case .integer(let value): value != 0
        case .double(let value): value != 0
        case .text(let value): !value.scalars.isEmpty
        case .list(let value): !value.isEmpty
        case .dictionary(let value): !value.isEmpty
        case .namespace, .function: true
        }
    }

    /// `str(value)` as Python writes it, keeping markup where the value is text.
    var text: JinjaText {
        switch self {
        case .text(let value): value
        case .undefined: JinjaText()
        default: JinjaText(repr(top: true), markup: false)
        }
    }

    /// Python's `str` (top) or `repr` (inside containers).
    func repr(top: Bool = false) -> String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .boolean(let value): value ? "True" : "False"
        case .integer(let value): String(value)
        case .double(let value): JinjaJSON.pythonFloat(value)
        case .text(let value):
            top ? value.string : "'" + value.string.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        case .list(let items): "[" + items.map { $0.repr() }.joined(separator: ", ") + "]"
        case .dictionary(let pairs): "{" + pairs.map { "'\($0.key)': " + $0.value.repr() }.joined(separator: ", ") + "}"
        case .namespace: "<Namespace>"
        case .function(let name, _): "<function \(name)>"
        }
    }

    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "NoneType"
        case .boolean: "bool"
        case .integer: "int"
        case .double: "float"
        case .text: "str"
        case .list: "list"
        case .dictionary: "dict"
        case .namespace: "Namespace"
        case .function: "function"
        }
    }

    /// Python `==`.
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): true
        case (.boolean(let a), .boolean(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.double(let a), .double(let b)): a == b
        case (.integer(let a), .double(let b)), (.double(let b), .integer(let a)): Double(a) == b
        case (.boolean(let a), .integer(let b)), (.integer(let b), .boolean(let a)): (a ? 1 : 0) == b
        case (.text(let a), .text(let b)): a == b
        case (.list(let a), .list(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case (.dictionary(let a), .dictionary(let b)):
            a.count == b.count && a.allSatisfy { pair in b.contains { $0.key == pair.key && $0.value.equals(pair.value) } }
        case (.namespace(let a), .namespace(let b)): a === b
        default: false
        }
    }
}

final class JinjaNamespace {
    var attributes: [String: JinjaValue] = [:]
}

/// Loop control inside `{% for %}`.
private enum LoopSignal: Error {
    case breakLoop
    case continueLoop
}

/// Runs a parsed template over a context.
struct JinjaInterpreter {
    /// Variables by scope, innermost last.
    private var scopes: [[String: JinjaValue]]
    private(set) var output = JinjaText()

    init(globals: [String: JinjaValue]) { scopes = [globals] }

    mutating func run(_ nodes: [JinjaNode]) throws {
        for node in nodes { try run(node) }
    }

    private func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let value = scope[name] { return value } }
        return .undefined(name)
    }

    private mutating func run(_ node: JinjaNode) throws {
        switch node {
        case .text(let text): output = output + JinjaText(text, markup: true)
        case .output(let expression): output = output + (try evaluate(expression)).text
        case .conditional(let branches, let otherwise):
            for (condition, body) in branches where try evaluate(condition).truthy {
                try run(body)
                return
            }
            try run(otherwise)
        case .assign(let target, let expression):
            let value = try evaluate(expression)
            if target.count == 1 {
                scopes[scopes.count - 1][target[0]] = value
            } else {
                guard target.count == 2, case .namespace(let namespace) = lookup(target[0]) else {
                    throw JinjaTemplateError("cannot assign to '\(target.joined(separator: "."))': only namespace attributes can be set")
                }
                namespace.attributes[target[1]] = value
            }
        case .breakLoop: throw LoopSignal.breakLoop
        case .continueLoop: throw LoopSignal.continueLoop
        case .loop(let targets, let iterable, let filter, let body, let otherwise):
            var items = try Self.iterate(try evaluate(iterable))
            if let filter {
                items = try items.filter { item in
                    scopes.append(try Self.bind(targets, to: item))
                    defer { scopes.removeLast() }
                    return try evaluate(filter).truthy
                }
            }
            guard !items.isEmpty else { return try run(otherwise) }
            for (index, item) in items.enumerated() {
                var scope = try Self.bind(targets, to: item)
                let previous = index > 0 ? items[index - 1] : JinjaValue.undefined("loop.previtem")
                let next = index + 1 < items.count ? items[index + 1] : JinjaValue.undefined("loop.nextitem")
                scope["loop"] = .dictionary([
                    ("index0", .integer(index)), ("index", .integer(index + 1)), ("first", .boolean(index == 0)),
                    ("last", .boolean(index == items.count - 1)), ("length", .integer(items.count)),
                    ("revindex", .integer(items.count - index)), ("revindex0", .integer(items.count - index - 1)),
                    ("previtem", previous), ("nextitem", next),
                ])
                scopes.append(scope)
                defer { scopes.removeLast() }
                do {
                    try run(body)
                } catch LoopSignal.continueLoop {
                    continue
                } catch LoopSignal.breakLoop {
                    break
                }
            }
        }
    }

    private static func bind(_ targets: [String], to item: JinjaValue) throws -> [String: JinjaValue] {
        if targets.count == 1 { return [targets[0]: item] }
        let parts = try iterate(item)
        guard parts.count == targets.count else { throw JinjaTemplateError("cannot unpack \(parts.count) values into \(targets.count) names") }
        return Dictionary(uniqueKeysWithValues: zip(targets, parts))
    }

    /// What `for` walks: a list's items, a dict's keys, a string's characters.
    static func iterate(_ value: JinjaValue) throws -> [JinjaValue] {
        switch value {
        case .list(let items): return items
        case .dictionary(let pairs): return pairs.map { .string($0.key) }
        case .text(let text): return text.scalars.indices.map { .text(text.slice($0..<($0 + 1))) }
        case .undefined: return []
        default: throw JinjaTemplateError("'\(value.typeName)' object is not iterable")
        }
    }

    // MARK: Expressions

    mutating func evaluate(_ expression: JinjaExpression) throws -> JinjaValue {
        switch expression {
        case .string(let value): return .string(value, markup: true)
        case .integer(let value): return .integer(value)
        case .double(let value): return .double(value)
        case .boolean(let value): return .boolean(value)
        case .none: return .none
        case .name(let name): return lookup(name)
        case .list(let items): return .list(try items.map { try evaluate($0) })
        case .dictionary(let pairs):
            return .dictionary(try pairs.map { (try evaluate($0.0).text.string, try evaluate($0.1)) })
        case .attribute(let base, let name): return try JinjaBuiltins.attribute(try evaluate(base), name)
        case .item(let base, let key):
            let container = try evaluate(base)
            let keyValue = try evaluate(key)
            return try JinjaBuiltins.item(container, keyValue)
        case .slice(let base, let start, let stop, let step):
            let value = try evaluate(base)
            func bound(_ expression: JinjaExpression?) throws -> Int? {
                guard let expression else { return nil }
                let value = try evaluate(expression)
                if case .none = value { return nil }
                guard case .integer(let number) = value else { throw JinjaTemplateError("slice indices must be integers") }
                return number
            }
            return try JinjaBuiltins.slice(value, try bound(start), try bound(stop), try bound(step))
        case .call(let callee, let arguments, let keywords):
            let function = try evaluate(callee)
            guard case .function(_, let body) = function else {
                if case .undefined(let name) = function { throw JinjaTemplateError("'\(name)' is undefined") }
                throw JinjaTemplateError("'\(function.typeName)' object is not callable")
            }
            return try body(try arguments.map { try evaluate($0) }, try keywords.map { ($0.0, try evaluate($0.1)) })
        case .filter(let base, let name, let arguments, let keywords):
            return try JinjaBuiltins.filter(
                name, try evaluate(base), try arguments.map { try evaluate($0) }, try keywords.map { ($0.0, try evaluate($0.1)) })
        case .test(let base, let name, let arguments, let negated):
            let result = try JinjaBuiltins.test(name, try evaluate(base), try arguments.map { try evaluate($0) })
            return .boolean(result != negated)
        case .not(let value): return .boolean(!(try evaluate(value).truthy))
        case .negate(let value):
            switch try evaluate(value) {
            case .integer(let number): return .integer(-number)
            case .double(let number): return .double(-number)
            case let other: throw JinjaTemplateError("bad operand type for unary -: '\(other.typeName)'")
            }
        case .conditional(let value, let condition, let otherwise):
            if try evaluate(condition).truthy { return try evaluate(value) }
            return try otherwise.map { try evaluate($0) } ?? .undefined("conditional")
        case .binary(let op, let leftExpression, let rightExpression):
            let left = try evaluate(leftExpression)
            switch op {
            case "and": return left.truthy ? try evaluate(rightExpression) : left
            case "or": return left.truthy ? left : try evaluate(rightExpression)
            default: return try JinjaBuiltins.binary(op, left, try evaluate(rightExpression))
            }
        }
    }
}

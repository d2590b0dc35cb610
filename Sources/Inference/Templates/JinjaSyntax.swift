import Foundation

/// The subset of Jinja that models' chat templates are written in, parsed as Python's Jinja2
/// parses them with the settings transformers renders chat templates with (`trim_blocks`,
/// `lstrip_blocks`): text, `{{ }}` output, `{% if/elif/else %}`, `{% for %}` (with `if`,
/// `else`, `loop`, unpacking), `{% set %}` (names and namespace attributes), comments,
/// whitespace control (`-`), and expressions with Jinja's precedence (conditional, `or`,
/// `and`, `not`, comparisons and `in`, `~`, `+ -`, `* / // %`, unary minus, filters and `is`
/// tests, attributes, items, slices, calls, list/dict/tuple literals).
package struct JinjaTemplateError: Error, Equatable, Sendable, CustomStringConvertible {
    package var message: String
    /// Raised by the template itself (`raise_exception`): the conversation is refused.
    package var raisedByTemplate = false

    package init(_ message: String, raisedByTemplate: Bool = false) {
        self.message = message
        self.raisedByTemplate = raisedByTemplate
    }

    package var description: String { message }
}

indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpression)
    case conditional([(condition: JinjaExpression, body: [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode], otherwise: [JinjaNode])
    case assign(target: [String], value: JinjaExpression)
    case breakLoop
    case continueLoop
}

indirect enum JinjaExpression: Sendable {
    case string(String)
    case integer(Int)
    case double(Double)
    case boolean(Bool)
    case none
    case name(String)
    case attribute(JinjaExpression, String)
    case item(JinjaExpression, JinjaExpression)
    case slice(JinjaExpression, JinjaExpression?, JinjaExpression?, JinjaExpression?)
    case call(JinjaExpression, [JinjaExpression], [(String, JinjaExpression)])
    case filter(JinjaExpression, String, [JinjaExpression], [(String, JinjaExpression)])
    case test(JinjaExpression, String, [JinjaExpression], negated: Bool)
    case not(JinjaExpression)
    case negate(JinjaExpression)
    case binary(String, JinjaExpression, JinjaExpression)
    case conditional(JinjaExpression, condition: JinjaExpression, otherwise: JinjaExpression?)
    case list([JinjaExpression])
    case dictionary([(JinjaExpression, JinjaExpression)])
}

enum JinjaParser {
    /// A piece of the template: text, or the inside of a tag.
    enum Piece {
        case text(String)
        case output(String)
        case statement(String)
    }

    static func parse(_ source: String) throws -> [JinjaNode] {
        // As Jinja2's lexer: newlines normalised, and one trailing newline dropped
        // (`keep_trailing_newline` is off).
        var normalized = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if normalized.hasSuffix("\n") { normalized.removeLast() }
        var pieces = try split(normalized)[...]
        let (nodes, end) = try block(&pieces, until: [])
        guard end == nil else { throw JinjaTemplateError("unexpected '{% \(end ?? "") %}'") }
        return nodes
    }

    // MARK: Lexing

    private static func isSpace(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.isWhitespace }

    /// Cuts the source into text and tags, applying `-` whitespace control, `lstrip_blocks` (a
    /// block or comment tag alone on its line takes the indentation before it) and
    /// `trim_blocks` (and the newline after it).
    static func split(_ source: String) throws -> [Piece] {
        let s = Array(source.unicodeScalars)
        var pieces: [Piece] = []
        var position = 0
        var stripNextText = false
        while position <= s.count {
            // The next tag opener.
            var open = position
            var kind: Unicode.Scalar = " "
            while open + 1 < s.count {
                if s[open] == "{", s[open + 1] == "{" || s[open + 1] == "%" || s[open + 1] == "#" {
                    kind = s[open + 1]
                    break
                }
                open += 1
            }
            let found = kind != " "
            let textEnd = found ? open : s.count
            var text = Array(s[position..<textEnd])
            if stripNextText {
                while let first = text.first, isSpace(first) { text.removeFirst() }
            }
            if found {
                let minus = open + 2 < s.count && s[open + 2] == "-"
                if minus {
                    while let last = text.last, isSpace(last) { text.removeLast() }
                } else if kind != "{" {
                    // lstrip_blocks: only spaces and tabs between the line's start and the tag.
                    let lineStart = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
                    let atLineStart = lineStart > 0 || position == 0 || s[position - 1] == "\n"
                    if atLineStart, text[lineStart...].allSatisfy({ $0 == " " || $0 == "\t" }) { text.removeSubrange(lineStart...) }
                }
            }
            if !text.isEmpty {
                var view = String.UnicodeScalarView()
                view.append(contentsOf: text)
                pieces.append(.text(String(view)))
            }
            guard found else { break }
            // The tag's end, outside string literals.
            let closer: Unicode.Scalar = kind == "{" ? "}" : kind == "%" ? "%" : "#"
            var index = open + 2
            var quote: Unicode.Scalar?
            var close: Int?
            while index + 1 < s.count {
                let c = s[index]
                if kind != "#", let q = quote {
                    if c == "\\" { index += 2; continue }
                    if c == q { quote = nil }
                } else if kind != "#", c == "'" || c == "\"" {
                    quote = c
                } else if c == closer, s[index + 1] == "}" {
                    close = index
                    break
                }
                index += 1
            }
            guard let close else { throw JinjaTemplateError("a tag opened at character \(open) is never closed") }
            let innerStart = open + 2 + ((open + 2 < s.count && (s[open + 2] == "-" || s[open + 2] == "+")) ? 1 : 0)
            let rightMinus = close > innerStart && s[close - 1] == "-"
            let innerEnd = rightMinus || (close > innerStart && s[close - 1] == "+") ? close - 1 : close
            var view = String.UnicodeScalarView()
            view.append(contentsOf: s[innerStart..<max(innerStart, innerEnd)])
            let inner = String(view)
            switch kind {
            case "{": pieces.append(.output(inner))
            case "%": pieces.append(.statement(inner))
            default: break  // a comment
            }
            position = close + 2
            stripNextText = rightMinus
            // trim_blocks: the first newline after a block or comment tag.
            if !rightMinus, kind != "{", position < s.count, s[position] == "\n" { position += 1 }
            if position == s.count { break }
        }
        return pieces
    }

    // MARK: Statements

    /// Nodes up to one of the `until` tags; returns them and the tag that ended them (nil at the end).
    private static func block(_ pieces: inout ArraySlice<Piece>, until: Set<String>) throws -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while let piece = pieces.popFirst() {
            switch piece {
            case .text(let text): nodes.append(.text(text))
            case .output(let source):
                var tokens = try JinjaTokens(source)
                let expression = try tokens.expression()
                try tokens.expectEnd()
                nodes.append(.output(expression))
            case .statement(let source):
                var tokens = try JinjaTokens(source)
                guard case .name(let keyword) = tokens.peek else { throw JinjaTemplateError("empty tag '{%\(source)%}'") }
                if until.contains(keyword) {
                    return (nodes, source.trimmingCharacters(in: .whitespaces))
                }
                tokens.advance()
                switch keyword {
                case "if": nodes.append(try conditional(&tokens, &pieces))
                case "for": nodes.append(try loop(&tokens, &pieces))
                case "set":
                    var target = [try tokens.name()]
                    while tokens.skip(".") { target.append(try tokens.name()) }
                    guard tokens.skip("=") else { throw JinjaTemplateError("'{% set %}' blocks are not supported") }
                    let value = try tokens.expression()
                    try tokens.expectEnd()
                    nodes.append(.assign(target: target, value: value))
                case "break": nodes.append(.breakLoop)
                case "continue": nodes.append(.continueLoop)
                case "generation", "endgeneration": break  // transformers' assistant-mask markers: no output
                default: throw JinjaTemplateError("the '\(keyword)' tag is not supported")
                }
            }
        }
        guard until.isEmpty else { throw JinjaTemplateError("missing '{% \(until.sorted().joined(separator: " / ")) %}'") }
        return (nodes, nil)
    }

    private static func keyword(_ tag: String?) -> String { tag.flatMap { $0.split(separator: " ").first.map(String.init) } ?? "" }

    private static func conditional(_ tokens: inout JinjaTokens, _ pieces: inout ArraySlice<Piece>) throws -> JinjaNode {
        var branches: [(JinjaExpression, [JinjaNode])] = []
        var condition = try tokens.expression()
        try tokens.expectEnd()
        while true {
            let (body, end) = try block(&pieces, until: ["elif", "else", "endif"])
            branches.append((condition, body))
            switch keyword(end) {
            case "elif":
                var next = try JinjaTokens(String(end?.dropFirst(4) ?? ""))
                condition = try next.expression()
                try next.expectEnd()
            case "else":
                let (otherwise, _) = try block(&pieces, until: ["endif"])
                return .conditional(branches, otherwise: otherwise)
            default:
                return .conditional(branches, otherwise: [])
            }
        }
    }

    private static func loop(_ tokens: inout JinjaTokens, _ pieces: inout ArraySlice<Piece>) throws -> JinjaNode {
        var targets = [try tokens.name()]
        while tokens.skip(",") { targets.append(try tokens.name()) }
        guard tokens.skipName("in") else { throw JinjaTemplateError("expected 'in' in a for loop") }
        let iterable = try tokens.expression(allowConditional: false)
        var filter: JinjaExpression?
        if tokens.skipName("if") { filter = try tokens.expression() }
        try tokens.expectEnd()
        let (body, end) = try block(&pieces, until: ["else", "endfor"])
        var otherwise: [JinjaNode] = []
        if keyword(end) == "else" { (otherwise, _) = try block(&pieces, until: ["endfor"]) }
        return .loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
    }
}

/// The tokens of one tag, and the expression grammar over them.
struct JinjaTokens {
    enum Token: Equatable {
        case name(String)
        case string(String)
        case integer(Int)
        case double(Double)
        case symbol(String)
    }

    private var tokens: [Token]
    private var index = 0

    init(_ source: String) throws {
        tokens = []
        let s = Array(source.unicodeScalars)
        var i = 0
        let symbols = ["==", "!=", "<=", ">=", "//", "**", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"]
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace {
                i += 1
            } else if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count, s[j] == "_" || s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]) { j += 1 }
                tokens.append(.name(Self.text(s[i..<j])))
                i = j
            } else if ("0"..."9").contains(c) {
                var j = i
                var isDouble = false
                while j < s.count, ("0"..."9").contains(s[j]) || (s[j] == "." && !isDouble && j + 1 < s.count && ("0"..."9").contains(s[j + 1])) {
                    if s[j] == "." { isDouble = true }
                    j += 1
                }
                let literal = Self.text(s[i..<j])
                if isDouble, let value = Double(literal) {
                    tokens.append(.double(value))
                } else if let value = Int(literal) {
                    tokens.append(.integer(value))
                } else {
                    throw JinjaTemplateError("bad number '\(literal)'")
                }
                i = j
            } else if c == "'" || c == "\"" {
                var j = i + 1
                var value = String.UnicodeScalarView()
                while j < s.count, s[j] != c {
                    if s[j] == "\\", j + 1 < s.count {
                        j += 1
                        switch s[j] {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "0": value.append("\0")
                        case "u", "x":
                            let digits = s[j] == "u" ? 4 : 2
                            guard j + digits < s.count, let code = UInt32(Self.text(s[(j + 1)...(j + digits)]), radix: 16), let scalar = Unicode.Scalar(code)
                            else { throw JinjaTemplateError("bad escape in a string") }
                            value.append(scalar)
                            j += digits
                        case "\\", "'", "\"": value.append(s[j])
                        default:
                            value.append("\\")
                            value.append(s[j])
                        }
                    } else {
                        value.append(s[j])
                    }
                    j += 1
                }
                guard j < s.count else { throw JinjaTemplateError("unterminated string") }
                tokens.append(.string(String(value)))
                i = j + 1
            } else if let symbol = symbols.first(where: { symbol in
                let u = Array(symbol.unicodeScalars)
                return i + u.count <= s.count && Array(s[i..<(i + u.count)]) == u
            }) {
                tokens.append(.symbol(symbol))
                i += symbol.unicodeScalars.count
            } else {
                throw JinjaTemplateError("unexpected character '\(c)'")
            }
        }
    }

    private static func text(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    var peek: Token? { index < tokens.count ? tokens[index] : nil }
    mutating func advance() { index += 1 }

    mutating func skip(_ symbol: String) -> Bool {
        guard peek == .symbol(symbol) else { return false }
        index += 1
        return true
    }

    mutating func skipName(_ name: String) -> Bool {
        guard peek == .name(name) else { return false }
        index += 1
        return true
    }

    func isName(_ name: String, at offset: Int = 0) -> Bool {
        index + offset < tokens.count && tokens[index + offset] == .name(name)
    }

    mutating func expect(_ symbol: String) throws {
        guard skip(symbol) else { throw JinjaTemplateError("expected '\(symbol)'") }
    }

    mutating func name() throws -> String {
        guard case .name(let name) = peek else { throw JinjaTemplateError("expected a name") }
        index += 1
        return name
    }

    func expectEnd() throws {
        guard index == tokens.count else { throw JinjaTemplateError("unexpected '\(tokens[index])'") }
    }

    // MARK: Expressions, lowest precedence first

    mutating func expression(allowConditional: Bool = true) throws -> JinjaExpression {
        let value = try or()
        guard allowConditional, skipName("if") else { return value }
        let condition = try or()
        let otherwise = skipName("else") ? try expression() : nil
        return .conditional(value, condition: condition, otherwise: otherwise)
    }

    private mutating func or() throws -> JinjaExpression {
        var left = try and()
        while skipName("or") { left = .binary("or", left, try and()) }
        return left
    }

    private mutating func and() throws -> JinjaExpression {
        var left = try not()
        while skipName("and") { left = .binary("and", left, try not()) }
        return left
    }

    private mutating func not() throws -> JinjaExpression {
        if skipName("not") { return .not(try not()) }
        return try comparison()
    }

    private mutating func comparison() throws -> JinjaExpression {
        var left = try concatenation()
        while true {
            if case .symbol(let op) = peek, ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                advance()
                left = .binary(op, left, try concatenation())
            } else if skipName("in") {
                left = .binary("in", left, try concatenation())
            } else if isName("not"), isName("in", at: 1) {
                index += 2
                left = .not(.binary("in", left, try concatenation()))
            } else {
                return left
            }
        }
    }

    private mutating func concatenation() throws -> JinjaExpression {
        var left = try sum()
        while skip("~") { left = .binary("~", left, try sum()) }
        return left
    }

    private mutating func sum() throws -> JinjaExpression {
        var left = try product()
        while case .symbol(let op) = peek, op == "+" || op == "-" {
            advance()
            left = .binary(op, left, try product())
        }
        return left
    }

    private mutating func product() throws -> JinjaExpression {
        var left = try unary()
        while case .symbol(let op) = peek, ["*", "/", "//", "%"].contains(op) {
            advance()
            left = .binary(op, left, try unary())
        }
        return left
    }

    private mutating func unary() throws -> JinjaExpression {
        if skip("-") { return try filtered(.negate(try unary(filters: false))) }
        if skip("+") { return try unary() }
        return try unary(filters: true)
    }

    private mutating func unary(filters: Bool) throws -> JinjaExpression {
        let value = try postfix(try primary())
        return filters ? try filtered(value) : value
    }

    /// Filters (`| name(args)`) and tests (`is [not] name [arg]`), left to right.
    private mutating func filtered(_ start: JinjaExpression) throws -> JinjaExpression {
        var value = start
        while true {
            if skip("|") {
                let name = try name()
                var (arguments, keywords) = ([JinjaExpression](), [(String, JinjaExpression)]())
                if skip("(") { (arguments, keywords) = try callArguments() }
                value = .filter(value, name, arguments, keywords)
            } else if skipName("is") {
                let negated = skipName("not")
                var name = try name()
                if name == "none" || name == "true" || name == "false" { name = name.lowercased() }
                var arguments: [JinjaExpression] = []
                if skip("(") {
                    arguments = try callArguments().0
                } else if let next = peek, Self.startsTestArgument(next) {
                    arguments = [try postfix(try primary())]
                }
                value = .test(value, name, arguments, negated: negated)
            } else {
                return value
            }
        }
    }

    /// Whether a token after a test's name is its one argument (`is equalto 'x'`, `is sameas none`).
    private static func startsTestArgument(_ token: Token) -> Bool {
        switch token {
        case .string, .integer, .double: true
        case .name(let name): !["and", "or", "if", "else", "not", "in", "is"].contains(name)
        case .symbol(let symbol): symbol == "[" || symbol == "{"
        }
    }

    private mutating func postfix(_ start: JinjaExpression) throws -> JinjaExpression {
        var value = start
        while true {
            if skip(".") {
                if case .integer(let number) = peek {
                    advance()
                    value = .item(value, .integer(number))
                } else {
                    value = .attribute(value, try name())
                }
            } else if skip("[") {
                var parts: [JinjaExpression?] = [nil]
                var isSlice = false
                while !skip("]") {
                    if skip(":") {
                        isSlice = true
                        parts.append(nil)
                    } else {
                        parts[parts.count - 1] = try expression()
                    }
                }
                if isSlice {
                    guard parts.count <= 3 else { throw JinjaTemplateError("bad slice") }
                    value = .slice(value, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil)
                } else {
                    guard let key = parts[0] else { throw JinjaTemplateError("empty subscript") }
                    value = .item(value, key)
                }
            } else if skip("(") {
                let (arguments, keywords) = try callArguments()
                value = .call(value, arguments, keywords)
            } else {
                return value
            }
        }
    }

    /// Arguments after `(`, through `)`.
    private mutating func callArguments() throws -> ([JinjaExpression], [(String, JinjaExpression)]) {
        var arguments: [JinjaExpression] = []
        var keywords: [(String, JinjaExpression)] = []
        while !skip(")") {
            if case .name(let name) = peek, index + 1 < tokens.count, tokens[index + 1] == .symbol("=") {
                index += 2
                keywords.append((name, try expression()))
            } else {
                arguments.append(try expression())
            }
            if !skip(",") {
                try expect(")")
                break
            }
        }
        return (arguments, keywords)
    }

    private mutating func primary() throws -> JinjaExpression {
        guard let token = peek else { throw JinjaTemplateError("unexpected end of expression") }
        advance()
        switch token {
        case .string(var value):
            // Adjacent literals concatenate, as in Python.
            while case .string(let next) = peek {
                value += next
                advance()
            }
            return .string(value)
        case .integer(let value): return .integer(value)
        case .double(let value): return .double(value)
        case .name(let name):
            switch name {
            case "true", "True": return .boolean(true)
            case "false", "False": return .boolean(false)
            case "none", "None": return .none
            default: return .name(name)
            }
        case .symbol("("):
            let first = try expression()
            if skip(")") { return first }
            var items = [first]
            while skip(",") {
                if skip(")") { return .list(items) }
                items.append(try expression())
            }
            try expect(")")
            return .list(items)
        case .symbol("["):
            var items: [JinjaExpression] = []
            while !skip("]") {
                items.append(try expression())
                if !skip(",") {
                    try expect("]")
                    break
                }
            }
            return .list(items)
        case .symbol("{"):
            var pairs: [(JinjaExpression, JinjaExpression)] = []
            while !skip("}") {
                let key = try expression()
                try expect(":")
                pairs.append((key, try expression()))
                if !skip(",") {
                    try expect("}")
                    break
                }
            }
            return .dictionary(pairs)
        default:
            throw JinjaTemplateError("unexpected '\(token)'")
        }
    }
}

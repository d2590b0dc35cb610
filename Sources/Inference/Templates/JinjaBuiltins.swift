import Foundation

/// Jinja's operators, filters, tests and the Python methods templates call, with Python's
/// semantics (what transformers' sandboxed Jinja2 environment gives a chat template).
enum JinjaBuiltins {
    static func fail(_ message: String) -> JinjaTemplateError { JinjaTemplateError(message) }

    // MARK: Attributes and items

    static func attribute(_ value: JinjaValue, _ name: String) throws -> JinjaValue {
        switch value {
        case .undefined(let base): throw fail("'\(base)' is undefined")
        case .dictionary(let pairs):
            if let method = dictionaryMethod(pairs, name) { return method }
            return pairs.first { $0.key == name }?.value ?? .undefined(name)
        case .text(let text): return stringMethod(text, name) ?? .undefined(name)
        case .namespace(let namespace): return namespace.attributes[name] ?? .undefined(name)
        default: return .undefined(name)
        }
    }

    static func item(_ container: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        switch (container, key) {
        case (.undefined(let base), _): throw fail("'\(base)' is undefined")
        case (.dictionary(let pairs), .text(let name)): return pairs.first { $0.key == name.string }?.value ?? .undefined(name.string)
        case (.list(let items), .integer(let index)):
            let position = index < 0 ? items.count + index : index
            return items.indices.contains(position) ? items[position] : .undefined("index \(index)")
        case (.text(let text), .integer(let index)):
            let position = index < 0 ? text.scalars.count + index : index
            return text.scalars.indices.contains(position) ? .text(text.slice(position..<(position + 1))) : .undefined("index \(index)")
        case (_, .text(let name)): return try attribute(container, name.string)
        default: return .undefined("item")
        }
    }

    /// Python's slice `[start:stop:step]` of a list or a string.
    static func slice(_ value: JinjaValue, _ start: Int?, _ stop: Int?, _ step: Int?) throws -> JinjaValue {
        let count: Int
        switch value {
        case .list(let items): count = items.count
        case .text(let text): count = text.scalars.count
        default: throw fail("'\(value.typeName)' object is not subscriptable")
        }
        let step = step ?? 1
        guard step != 0 else { throw fail("slice step cannot be zero") }
        func clamp(_ index: Int?, _ fallback: Int) -> Int {
            guard var index else { return fallback }
            if index < 0 { index += count }
            return step > 0 ? min(max(index, 0), count) : min(max(index, -1), count - 1)
        }
        let first = clamp(start, step > 0 ? 0 : count - 1)
        let end = clamp(stop, step > 0 ? count : -1)
        var positions: [Int] = []
        var position = first
        while step > 0 ? position < end : position > end {
            positions.append(position)
            position += step
        }
        switch value {
        case .list(let items): return .list(positions.map { items[$0] })
        case .text(let text):
            var result = JinjaText()
            for position in positions { result = result + text.slice(position..<(position + 1)) }
            return .text(result)
        default: return .undefined("slice")
        }
    }

    private static func dictionaryMethod(_ pairs: [(key: String, value: JinjaValue)], _ name: String) -> JinjaValue? {
        switch name {
        case "items": return .function(name) { _, _ in .list(pairs.map { .list([.string($0.key), $0.value]) }) }
        case "keys": return .function(name) { _, _ in .list(pairs.map { .string($0.key) }) }
        case "values": return .function(name) { _, _ in .list(pairs.map(\.value)) }
        case "get":
            return .function(name) { arguments, _ in
                guard let key = arguments.first else { throw fail("get() needs a key") }
                return pairs.first { $0.key == key.text.string }?.value ?? (arguments.count > 1 ? arguments[1] : .none)
            }
        default: return nil
        }
    }

    private static func characters(_ argument: JinjaValue?) -> Set<Unicode.Scalar>? {
        guard let argument, case .text(let text) = argument else { return nil }
        return Set(text.scalars)
    }

    private static func stringMethod(_ text: JinjaText, _ name: String) -> JinjaValue? {
        switch name {
        case "strip", "lstrip", "rstrip":
            return .function(name) { arguments, _ in
                .text(text.stripped(leading: name != "rstrip", trailing: name != "lstrip", characters: characters(arguments.first)))
            }
        case "replace":
            return .function(name) { arguments, _ in
                guard arguments.count >= 2, case .text(let old) = arguments[0], case .text(let new) = arguments[1] else {
                    throw fail("replace() takes two strings")
                }
                var limit = Int.max
                if arguments.count > 2, case .integer(let count) = arguments[2], count >= 0 { limit = count }
                return .text(replace(text, old, new, limit: limit))
            }
        case "startswith", "endswith":
            return .function(name) { arguments, _ in
                let candidates: [JinjaValue] = if case .list(let items) = arguments.first { items } else { Array(arguments.prefix(1)) }
                return .boolean(candidates.contains { candidate in
                    guard case .text(let affix) = candidate else { return false }
                    return name == "startswith" ? text.scalars.starts(with: affix.scalars) : text.scalars.reversed().starts(with: affix.scalars.reversed())
                })
            }
        case "upper": return .function(name) { _, _ in .text(JinjaText(text.string.uppercased(), markup: false)) }
        case "lower": return .function(name) { _, _ in .text(JinjaText(text.string.lowercased(), markup: false)) }
        case "title": return .function(name) { _, _ in .text(JinjaText(text.string.capitalized, markup: false)) }
        case "capitalize": return .function(name) { _, _ in .text(JinjaText(capitalize(text.string), markup: false)) }
        case "split":
            return .function(name) { arguments, _ in
                if let separator = arguments.first, case .text(let sep) = separator {
                    guard !sep.scalars.isEmpty else { throw fail("empty separator") }
                    var parts: [JinjaValue] = []
                    var start = 0
                    while let found = text.firstIndex(of: sep.scalars, from: start) {
                        parts.append(.text(text.slice(start..<found)))
                        start = found + sep.scalars.count
                    }
                    parts.append(.text(text.slice(start..<text.scalars.count)))
                    return .list(parts)
                }
                var parts: [JinjaValue] = []
                var start: Int?
                for (index, scalar) in text.scalars.enumerated() {
                    if JinjaText.isPythonSpace(scalar) {
                        if let begin = start { parts.append(.text(text.slice(begin..<index))) }
                        start = nil
                    } else if start == nil {
                        start = index
                    }
                }
                if let begin = start { parts.append(.text(text.slice(begin..<text.scalars.count))) }
                return .list(parts)
            }
        default: return nil
        }
    }

    private static func capitalize(_ string: String) -> String {
        guard let first = string.first else { return string }
        return String(first).uppercased() + string.dropFirst().lowercased()
    }

    /// Python's `str.replace`: every occurrence (up to `limit`), left to right; an empty `old`
    /// puts `new` between all characters and at both ends.
    static func replace(_ text: JinjaText, _ old: JinjaText, _ new: JinjaText, limit: Int) -> JinjaText {
        var result = JinjaText()
        var replaced = 0
        if old.scalars.isEmpty {
            for index in 0...text.scalars.count {
                if replaced < limit {
                    result = result + new
                    replaced += 1
                }
                if index < text.scalars.count { result = result + text.slice(index..<(index + 1)) }
            }
            return result
        }
        var start = 0
        while replaced < limit, let found = text.firstIndex(of: old.scalars, from: start) {
            result = result + text.slice(start..<found) + new
            start = found + old.scalars.count
            replaced += 1
        }
        return result + text.slice(start..<text.scalars.count)
    }

    // MARK: Operators

    static func binary(_ op: String, _ left: JinjaValue, _ right: JinjaValue) throws -> JinjaValue {
        switch (op, left, right) {
        case ("==", _, _): return .boolean(left.equals(right))
        case ("!=", _, _): return .boolean(!left.equals(right))
        case ("~", _, _): return .text(left.text + right.text)
        case ("in", _, .text(let haystack)):
            guard case .text(let needle) = left else { throw fail("'in <string>' requires string as left operand, not \(left.typeName)") }
            return .boolean(haystack.firstIndex(of: needle.scalars) != nil)
        case ("in", _, .list(let items)): return .boolean(items.contains { $0.equals(left) })
        case ("in", _, .dictionary(let pairs)): return .boolean(pairs.contains { JinjaValue.string($0.key).equals(left) })
        case ("in", _, _): throw fail("argument of type '\(right.typeName)' is not iterable")
        case ("+", .text(let a), .text(let b)): return .text(a + b)
        case ("+", .list(let a), .list(let b)): return .list(a + b)
        case ("*", .text(let a), .integer(let n)):
            var result = JinjaText()
            for _ in 0..<max(0, n) { result = result + a }
            return .text(result)
        case ("*", .list(let a), .integer(let n)): return .list(Array(repeating: a, count: max(0, n)).flatMap { $0 })
        case (_, .integer(let a), .integer(let b)):
            switch op {
            case "+": return .integer(a &+ b)
            case "-": return .integer(a &- b)
            case "*": return .integer(a &* b)
            case "/":
                guard b != 0 else { throw fail("division by zero") }
                return .double(Double(a) / Double(b))
            case "//", "%":
                guard b != 0 else { throw fail("integer division or modulo by zero") }
                let quotient = Int((Double(a) / Double(b)).rounded(.down))
                return op == "//" ? .integer(quotient) : .integer(a - quotient * b)
            case "<": return .boolean(a < b)
            case ">": return .boolean(a > b)
            case "<=": return .boolean(a <= b)
            case ">=": return .boolean(a >= b)
            default: break
            }
        case (_, .text(let a), .text(let b)) where ["<", ">", "<=", ">="].contains(op):
            let less = a.scalars.lexicographicallyPrecedes(b.scalars) { $0.value < $1.value }
            let greater = b.scalars.lexicographicallyPrecedes(a.scalars) { $0.value < $1.value }
            switch op {
            case "<": return .boolean(less)
            case ">": return .boolean(greater)
            case "<=": return .boolean(!greater)
            default: return .boolean(!less)
            }
        default: break
        }
        if let a = number(left), let b = number(right) {
            switch op {
            case "+": return .double(a + b)
            case "-": return .double(a - b)
            case "*": return .double(a * b)
            case "/":
                guard b != 0 else { throw fail("division by zero") }
                return .double(a / b)
            case "<": return .boolean(a < b)
            case ">": return .boolean(a > b)
            case "<=": return .boolean(a <= b)
            case ">=": return .boolean(a >= b)
            default: break
            }
        }
        throw fail("unsupported operand type(s) for \(op): '\(left.typeName)' and '\(right.typeName)'")
    }

    private static func number(_ value: JinjaValue) -> Double? {
        switch value {
        case .integer(let number): Double(number)
        case .double(let number): number
        case .boolean(let flag): flag ? 1 : 0
        default: nil
        }
    }

    // MARK: Filters

    static func filter(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue], _ keywords: [(String, JinjaValue)]) throws -> JinjaValue {
        func keyword(_ key: String, _ position: Int) -> JinjaValue? {
            keywords.first { $0.0 == key }?.1 ?? (arguments.count > position ? arguments[position] : nil)
        }
        switch name {
        case "trim":
            guard case .text(let text) = value else { return .text(JinjaText(value.text.string.trimmingCharacters(in: .whitespacesAndNewlines), markup: false)) }
            return .text(text.stripped(leading: true, trailing: true, characters: characters(keyword("chars", 0))))
        case "length", "count":
            switch value {
            case .text(let text): return .integer(text.scalars.count)
            case .list(let items): return .integer(items.count)
            case .dictionary(let pairs): return .integer(pairs.count)
            case .undefined: return .integer(0)
            default: throw fail("object of type '\(value.typeName)' has no len()")
            }
        case "list": return .list(try JinjaInterpreter.iterate(value))
        case "first": return try JinjaInterpreter.iterate(value).first ?? .undefined("first")
        case "last": return try JinjaInterpreter.iterate(value).last ?? .undefined("last")
        case "string": return .text(value.text)
        case "lower", "upper", "capitalize", "title":
            return try attribute(.text(value.text), name).call()
        case "replace":
            guard arguments.count >= 2 else { throw fail("replace needs two arguments") }
            return .text(replace(value.text, arguments[0].text, arguments[1].text, limit: Int.max))
        case "default", "d":
            let fallback = keyword("default_value", 0) ?? .string("")
            let boolean = keyword("boolean", 1)?.truthy ?? false
            return (boolean ? value.truthy : value.isDefined) ? value : fallback
        case "join":
            let separator = keyword("d", 0)?.text ?? JinjaText()
            let attribute = keyword("attribute", 1)
            var result = JinjaText()
            for (index, item) in try JinjaInterpreter.iterate(value).enumerated() {
                if index > 0 { result = result + separator }
                let shown = try attribute.map { try self.item(item, $0) } ?? item
                result = result + shown.text
            }
            return .text(result)
        case "items":
            guard case .dictionary(let pairs) = value else {
                if case .undefined = value { return .list([]) }
                throw fail("items filter needs a mapping")
            }
            return .list(pairs.map { .list([.string($0.key), $0.value]) })
        case "tojson":
            let indent = keyword("indent", 0).flatMap { if case .integer(let n) = $0 { n } else { nil } }
            return .string(try JinjaJSON.encode(value, indent: indent, level: 0))
        case "int":
            switch value {
            case .integer: return value
            case .double(let number): return .integer(Int(number))
            case .text(let text): return .integer(Int(text.string.trimmingCharacters(in: .whitespaces)) ?? 0)
            case .boolean(let flag): return .integer(flag ? 1 : 0)
            default: return .integer(0)
            }
        case "abs":
            switch value {
            case .integer(let number): return .integer(abs(number))
            case .double(let number): return .double(abs(number))
            default: throw fail("bad operand type for abs()")
            }
        case "safe": return value
        case "select", "reject", "selectattr", "rejectattr":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            let attributeName = byAttribute ? arguments.first?.text.string : nil
            let testArguments = Array(arguments.dropFirst(byAttribute ? 1 : 0))
            return .list(try JinjaInterpreter.iterate(value).filter { item in
                let subject = try attributeName.map { try attribute(item, $0) } ?? item
                let result: Bool
                if let testName = testArguments.first?.text.string {
                    result = try test(testName, subject, Array(testArguments.dropFirst()))
                } else {
                    result = subject.truthy
                }
                return result == keep
            })
        case "map":
            if let attributeName = keywords.first(where: { $0.0 == "attribute" })?.1.text.string {
                return .list(try JinjaInterpreter.iterate(value).map { try attribute($0, attributeName) })
            }
            guard let filterName = arguments.first?.text.string else { throw fail("map needs a filter or attribute") }
            return .list(try JinjaInterpreter.iterate(value).map { try filter(filterName, $0, Array(arguments.dropFirst()), []) })
        case "unique":
            var seen: [JinjaValue] = []
            for item in try JinjaInterpreter.iterate(value) where !seen.contains(where: { $0.equals(item) }) { seen.append(item) }
            return .list(seen)
        case "reverse":
            if case .text(let text) = value { return .text(JinjaText(scalars: ArraySlice(text.scalars.reversed()), markup: ArraySlice(text.markup.reversed()))) }
            return .list(try JinjaInterpreter.iterate(value).reversed())
        default: throw fail("the '\(name)' filter is not supported")
        }
    }

    // MARK: Tests

    static func test(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue]) throws -> Bool {
        switch name {
        case "defined": return value.isDefined
        case "undefined": return !value.isDefined
        case "none": if case .none = value { return true } else { return false }
        case "boolean": if case .boolean = value { return true } else { return false }
        case "true": if case .boolean(true) = value { return true } else { return false }
        case "false": if case .boolean(false) = value { return true } else { return false }
        case "string": if case .text = value { return true } else { return false }
        case "integer": if case .integer = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "number":
            switch value {
            case .integer, .double, .boolean: return true
            default: return false
            }
        case "mapping": if case .dictionary = value { return true } else { return false }
        case "iterable", "sequence":
            switch value {
            case .list, .text, .dictionary: return true
            default: return false
            }
        case "callable": if case .function = value { return true } else { return false }
        case "equalto", "eq", "==", "sameas": return arguments.first.map { value.equals($0) } ?? false
        case "ne", "!=": return arguments.first.map { !value.equals($0) } ?? true
        case "odd", "even":
            guard case .integer(let number) = value else { throw fail("\(name) needs an integer") }
            return (number % 2 != 0) == (name == "odd")
        case "in": return try arguments.first.map { try binary("in", value, $0).truthy } ?? false
        case "lt", "gt", "le", "ge", "<", ">", "<=", ">=":
            let symbol = ["lt": "<", "gt": ">", "le": "<=", "ge": ">="][name] ?? name
            return try arguments.first.map { try binary(symbol, value, $0).truthy } ?? false
        default: throw fail("the '\(name)' test is not supported")
        }
    }
}

extension JinjaValue {
    /// Calls a method value with no arguments.
    func call() throws -> JinjaValue {
        guard case .function(_, let body) = self else { throw JinjaTemplateError("'\(typeName)' object is not callable") }
        return try body([], [])
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, which transformers' `tojson`
/// filter is.
enum JinjaJSON {
    static func encode(_ value: JinjaValue, indent: Int?, level: Int) throws -> String {
        switch value {
        case .none: return "null"
        case .boolean(let flag): return flag ? "true" : "false"
        case .integer(let number): return String(number)
        case .double(let number):
            if number.isNaN { return "NaN" }
            if number.isInfinite { return number > 0 ? "Infinity" : "-Infinity" }
            return pythonFloat(number)
        case .text(let text): return quote(text.string)
        case .list(let items):
            return try container(items.map { try encode($0, indent: indent, level: level + 1) }, open: "[", close: "]", indent: indent, level: level)
        case .dictionary(let pairs):
            return try container(
                pairs.map { quote($0.key) + ": " + (try encode($0.value, indent: indent, level: level + 1)) }, open: "{", close: "}", indent: indent,
                level: level)
        case .undefined(let name): throw JinjaTemplateError("Object of type Undefined ('\(name)') is not JSON serializable")
        default: throw JinjaTemplateError("Object of type \(value.typeName) is not JSON serializable")
        }
    }

    private static func container(_ items: [String], open: String, close: String, indent: Int?, level: Int) -> String {
        guard !items.isEmpty else { return open + close }
        guard let indent else { return open + items.joined(separator: ", ") + close }
        let inner = "\n" + String(repeating: " ", count: indent * (level + 1))
        return open + inner + items.joined(separator: "," + inner) + "\n" + String(repeating: " ", count: indent * level) + close
    }

    static func quote(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// Python's `repr(float)`: the shortest digits that read back, with Python's exponent form.
    static func pythonFloat(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        let text = "\(value)"
        return text.contains(".") || text.contains("e") ? text : text + ".0"
    }
}

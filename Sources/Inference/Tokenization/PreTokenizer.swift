/// How text is cut into pieces before byte-pair merging: the split patterns of the tokenizers
/// ModelGate reads, matched by hand (each is one alternation, tried in order at each position,
/// as the regular expressions in their `tokenizer.json` do).
package enum PreTokenizer: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`. With
    /// `individualDigits` every digit is first cut out on its own (SmolLM's `Digits` step).
    case gpt2(individualDigits: Bool)
    /// Llama 3 (`maxDigits` 3) and Qwen2 (`maxDigits` 1):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llama3(maxDigits: Int)
    /// The whole text is one piece (SentencePiece models).
    case none

    /// The split patterns of Hugging Face `tokenizer.json` files, as they are written there.
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// The pre-tokenizer a `Split` pattern stands for, if ModelGate knows it.
    static func matching(pattern: String) -> PreTokenizer? {
        switch pattern {
        case llama3Pattern: .llama3(maxDigits: 3)
        case qwen2Pattern: .llama3(maxDigits: 1)
        case gpt2Pattern: .gpt2(individualDigits: false)
        default: nil
        }
    }

    /// The pieces of `text`.
    func pieces(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        return split(scalars).map { range in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[range])
            return String(view)
        }
    }

    /// The pieces of `scalars`, as ranges that cover it in order.
    func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .none: return scalars.isEmpty ? [] : [0..<scalars.count]
        case .llama3(let maxDigits): return Self.scan(scalars, 0..<scalars.count) { Self.llama3Match($0, $1, $2, maxDigits: maxDigits) }
        case .gpt2(let individualDigits):
            guard individualDigits else { return Self.scan(scalars, 0..<scalars.count, Self.gpt2Match) }
            var pieces: [Range<Int>] = []
            var start = 0
            for index in scalars.indices where Self.isNumber(scalars[index]) {
                pieces += Self.scan(scalars, start..<index, Self.gpt2Match)
                pieces.append(index..<(index + 1))
                start = index + 1
            }
            return pieces + Self.scan(scalars, start..<scalars.count, Self.gpt2Match)
        }
    }

    /// Applies `match` (the end of the piece that starts at an index, within an end) from the
    /// start of `range` to its end.
    private static func scan(
        _ scalars: [Unicode.Scalar], _ range: Range<Int>, _ match: ([Unicode.Scalar], Int, Int) -> Int
    ) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var index = range.lowerBound
        while index < range.upperBound {
            // Every alternative ends in `\s+` or a one-character class: a piece is never empty.
            let end = max(index + 1, match(scalars, index, range.upperBound))
            pieces.append(index..<end)
            index = end
        }
        return pieces
    }

    private static func gpt2Match(_ s: [Unicode.Scalar], _ i: Int, _ n: Int) -> Int {
        if let end = contraction(s, i, n, caseInsensitive: false) { return end }
        let head = s[i] == " " && i + 1 < n ? i + 1 : i
        if head > i || !isSpace(s[i]) {
            let first = s[head]
            let run: ((Unicode.Scalar) -> Bool)?
            if isLetter(first) {
                run = isLetter
            } else if isNumber(first) {
                run = isNumber
            } else if !isSpace(first) {
                run = isOther
            } else {
                run = nil
            }
            if let run {
                var end = head + 1
                while end < n, run(s[end]) { end += 1 }
                return end
            }
        }
        return whitespace(s, i, n, newlines: false)
    }

    private static func llama3Match(_ s: [Unicode.Scalar], _ i: Int, _ n: Int, maxDigits: Int) -> Int {
        if let end = contraction(s, i, n, caseInsensitive: true) { return end }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        var letters = i
        if !isNewline(s[i]), !isLetter(s[i]), !isNumber(s[i]), i + 1 < n, isLetter(s[i + 1]) { letters = i + 1 }
        if isLetter(s[letters]) {
            var end = letters + 1
            while end < n, isLetter(s[end]) { end += 1 }
            return end
        }
        // \p{N}{1,maxDigits}
        if isNumber(s[i]) {
            var end = i + 1
            while end < n, end - i < maxDigits, isNumber(s[end]) { end += 1 }
            return end
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        let other = s[i] == " " && i + 1 < n && isOther(s[i + 1]) ? i + 1 : i
        if isOther(s[other]) {
            var end = other + 1
            while end < n, isOther(s[end]) { end += 1 }
            while end < n, isNewline(s[end]) { end += 1 }
            return end
        }
        return whitespace(s, i, n, newlines: true)
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`.
    private static func contraction(_ s: [Unicode.Scalar], _ i: Int, _ n: Int, caseInsensitive: Bool) -> Int? {
        guard s[i] == "'", i + 1 < n else { return nil }
        func letter(_ index: Int) -> Unicode.Scalar? {
            guard index < n else { return nil }
            let scalar = s[index]
            return caseInsensitive && scalar.value >= 65 && scalar.value <= 90 ? Unicode.Scalar(scalar.value + 32) : scalar
        }
        switch (letter(i + 1), letter(i + 2)) {
        case ("r", "e"), ("v", "e"), ("l", "l"): return i + 3
        case ("s", _), ("t", _), ("m", _), ("d", _): return i + 2
        default: return nil
        }
    }

    /// `\s*[\r\n]+` (with `newlines`), then `\s+(?!\S)`, then `\s+` — or one character if `s[i]`
    /// is not whitespace at all (never reached by the patterns above).
    private static func whitespace(_ s: [Unicode.Scalar], _ i: Int, _ n: Int, newlines: Bool) -> Int {
        var end = i
        while end < n, isSpace(s[end]) { end += 1 }
        guard end > i else { return i + 1 }
        if newlines, let last = (i..<end).last(where: { isNewline(s[$0]) }) { return last + 1 }
        // Before a non-space, the run leaves its last space to the next piece.
        return end < n && end - i >= 2 ? end - 1 : end
    }

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: true
        default: false
        }
    }

    static func isSpace(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.isWhitespace }

    static func isNewline(_ scalar: Unicode.Scalar) -> Bool { scalar == "\r" || scalar == "\n" }

    /// `[^\s\p{L}\p{N}]`.
    static func isOther(_ scalar: Unicode.Scalar) -> Bool { !isSpace(scalar) && !isLetter(scalar) && !isNumber(scalar) }
}

import Foundation

/// BERT's tokenizer (`vocab.txt`): basic tokenisation (clean control characters, space out CJK
/// ideographs, lower-case, strip accents, split punctuation), then WordPiece greedy
/// longest-match with `##` continuations; `[CLS] ... [SEP]` around each text. The vocabulary
/// is keyed by UTF-8 bytes: `String` keys would match canonically equivalent spellings
/// (`"é"` and `"e\u{301}"`) that Hugging Face's tokenizer keeps apart.
package final class WordPieceTokenizer: Sendable {
    let vocabulary: [[UInt8]: Int]
    let inverse: [Int: String]
    package let lowercase: Bool
    package let classToken: Int
    package let separatorToken: Int
    package let unknownToken: Int
    static let maxCharactersPerWord = 100

    package convenience init(vocabularyFile path: String, lowercase: Bool = true) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ModelLoadError(file: path, reason: "missing or not UTF-8")
        }
        var vocabulary: [[UInt8]: Int] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let token = Array((line.hasSuffix("\r") ? line.dropLast() : line).utf8)
            if token.isEmpty && index > 0 { continue }
            if vocabulary[token] == nil { vocabulary[token] = index }
        }
        try self.init(vocabulary: vocabulary, lowercase: lowercase, file: path)
    }

    convenience init(vocabulary: [String: Int], lowercase: Bool, file: String = "vocab.txt") throws {
        var byBytes: [[UInt8]: Int] = [:]
        for (token, id) in vocabulary.sorted(by: { $0.value < $1.value }) where byBytes[Array(token.utf8)] == nil { byBytes[Array(token.utf8)] = id }
        try self.init(vocabulary: byBytes, lowercase: lowercase, file: file)
    }

    init(vocabulary: [[UInt8]: Int], lowercase: Bool, file: String) throws {
        self.vocabulary = vocabulary
        var inverse: [Int: String] = [:]
        for (token, id) in vocabulary { inverse[id] = String(decoding: token, as: UTF8.self) }
        self.inverse = inverse
        self.lowercase = lowercase
        guard let cls = vocabulary[Array("[CLS]".utf8)], let sep = vocabulary[Array("[SEP]".utf8)], let unk = vocabulary[Array("[UNK]".utf8)] else {
            throw ModelLoadError(file: file, reason: "vocabulary lacks [CLS], [SEP] or [UNK]")
        }
        classToken = cls
        separatorToken = sep
        unknownToken = unk
    }

    package var vocabularySize: Int { (inverse.keys.max() ?? -1) + 1 }

    /// `[CLS] tokens [SEP]`, truncated to `maxLength` ids in all.
    package func encode(_ text: String, maxLength: Int = 512) -> [Int] {
        var ids = [classToken]
        for word in basicTokens(text) {
            ids += wordPiece(word)
            if ids.count >= maxLength - 1 { break }
        }
        if ids.count > maxLength - 1 { ids = Array(ids.prefix(maxLength - 1)) }
        return ids + [separatorToken]
    }

    package func token(_ id: Int) -> String? { inverse[id] }

    // MARK: Basic tokenisation

    func basicTokens(_ text: String) -> [String] {
        var cleaned = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value == 0 || value == 0xFFFD || Self.isControl(scalar) { continue }
            if Self.isWhitespace(scalar) {
                cleaned.append(" ")
            } else if Self.isCJK(value) {
                cleaned.append(" ")
                cleaned.append(scalar)
                cleaned.append(" ")
            } else {
                cleaned.append(scalar)
            }
        }
        var tokens: [String] = []
        for word in String(cleaned).split(separator: " ") {
            var token = String(word)
            if lowercase {
                token = token.lowercased()
                token = Self.stripAccents(token)
            }
            tokens += Self.splitPunctuation(token)
        }
        return tokens
    }

    static func stripAccents(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.decomposedStringWithCanonicalMapping.unicodeScalars where scalar.properties.generalCategory != .nonspacingMark {
            out.append(scalar)
        }
        return String(out)
    }

    static func splitPunctuation(_ text: String) -> [String] {
        var pieces: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if isPunctuation(scalar) {
                if !current.isEmpty { pieces.append(String(current)) }
                current = String.UnicodeScalarView()
                pieces.append(String(scalar))
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { pieces.append(String(current)) }
        return pieces
    }

    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" { return true }
        return scalar.properties.generalCategory == .spaceSeparator
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\t" || scalar == "\n" || scalar == "\r" { return false }
        let category = scalar.properties.generalCategory
        return category == .control || category == .format
    }

    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if (33...47).contains(value) || (58...64).contains(value) || (91...96).contains(value) || (123...126).contains(value) {
            return true
        }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
            .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    static func isCJK(_ value: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(value) || (0x3400...0x4DBF).contains(value) || (0x20000...0x2A6DF).contains(value)
            || (0x2A700...0x2B73F).contains(value) || (0x2B740...0x2B81F).contains(value) || (0x2B820...0x2CEAF).contains(value)
            || (0xF900...0xFAFF).contains(value) || (0x2F800...0x2FA1F).contains(value)
    }

    // MARK: WordPiece

    func wordPiece(_ word: String) -> [Int] {
        let characters = Array(word.unicodeScalars)
        guard characters.count <= Self.maxCharactersPerWord else { return [unknownToken] }
        // Each scalar's UTF-8 bytes, so a candidate piece is a byte range.
        let encoded = characters.map { Array(String($0).utf8) }
        var ids: [Int] = []
        var start = 0
        while start < characters.count {
            var end = characters.count
            var found: Int?
            while start < end {
                var piece: [UInt8] = start > 0 ? [0x23, 0x23] : []  // "##"
                for scalar in encoded[start..<end] { piece += scalar }
                if let id = vocabulary[piece] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let found else { return [unknownToken] }
            ids.append(found)
            start = end
        }
        return ids
    }
}

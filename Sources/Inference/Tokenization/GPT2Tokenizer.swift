import Foundation
import Synchronization

/// Text <-> token ids for a model.
package protocol Tokenizer: Sendable {
    func encode(_ text: String) -> [Int]
    /// The raw bytes of tokens (byte-level tokenizers may split a UTF-8 character across tokens).
    func bytes(_ tokens: [Int]) -> [UInt8]
    var vocabularySize: Int { get }
}

extension Tokenizer {
    /// Decodes to text, replacing invalid UTF-8 (only at the very end of partial output).
    package func decode(_ tokens: [Int]) -> String {
        String(decoding: bytes(tokens), as: UTF8.self)
    }
}

/// GPT-2's byte-level BPE (`vocab.json` + `merges.txt`), exact to Hugging Face's tokenizer:
/// GPT-2's pre-tokenisation pattern, bytes mapped to printable characters, merges by rank.
/// Any UTF-8 round-trips, because every byte has a token.
///
/// Every table is keyed by bytes or token ids, never by `String`: Swift's `String` equality is
/// Unicode canonical equivalence, so a `String`-keyed cache would hand the tokens of `"≯"` to
/// `">\u{338}"` (different bytes, different tokens) — across requests and tenants.
public final class GPT2Tokenizer: Tokenizer {
    /// Token bytes -> id.
    private let encoder: [[UInt8]: Int]
    private let decoder: [Int: [UInt8]]
    /// A pair of adjacent token ids -> the merge's rank and the id it makes (as Hugging Face's
    /// BPE model holds its merges).
    private let merges: [Pair: Merge]
    /// The id of each single byte (nil when a custom vocabulary lacks it).
    private let byteTokens: [Int?]
    /// Pieces already encoded, by their UTF-8 bytes.
    private let cache = Mutex<[[UInt8]: [Int]]>([:])
    public let vocabularySize: Int
    /// The `<|endoftext|>` id, when the vocabulary has it.
    package let endOfText: Int?

    struct Pair: Hashable {
        var first: Int
        var second: Int
    }

    struct Merge {
        var rank: Int
        var merged: Int
    }

    public convenience init(directory: String) throws {
        let vocabPath = directory + "/vocab.json"
        let mergesPath = directory + "/merges.txt"
        guard let vocabData = FileManager.default.contents(atPath: vocabPath) else {
            throw ModelLoadError(file: vocabPath, reason: "missing")
        }
        guard let mergesText = try? String(contentsOfFile: mergesPath, encoding: .utf8) else {
            throw ModelLoadError(file: mergesPath, reason: "missing or not UTF-8")
        }
        guard let vocab = try? JSONDecoder().decode([String: Int].self, from: vocabData) else {
            throw ModelLoadError(file: vocabPath, reason: "not a JSON object of token -> id")
        }
        var merges: [(String, String)] = []
        for line in mergesText.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw ModelLoadError(file: mergesPath, reason: "malformed merge line '\(line)'") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        self.init(vocabulary: vocab, merges: merges)
    }

    /// `vocabulary` and `merges` in the file's printable form (each byte one character of
    /// GPT-2's byte table); they are turned into bytes here, scalar by scalar.
    public init(vocabulary: [String: Int], merges: [(String, String)]) {
        var unicodeToByte: [Unicode.Scalar: UInt8] = [:]
        for (byte, character) in Self.byteTable().enumerated() {
            if let scalar = character.unicodeScalars.first { unicodeToByte[scalar] = UInt8(byte) }
        }
        func bytes(_ token: String) -> [UInt8] { token.unicodeScalars.compactMap { unicodeToByte[$0] } }
        var encoder: [[UInt8]: Int] = [:]
        var decoder: [Int: [UInt8]] = [:]
        for (token, id) in vocabulary {
            let tokenBytes = bytes(token)
            decoder[id] = tokenBytes
            // Two spellings of one byte string: the lower id wins (whatever the dictionary's order).
            if let existing = encoder[tokenBytes], existing < id { continue }
            encoder[tokenBytes] = id
        }
        self.encoder = encoder
        self.decoder = decoder
        var table: [Pair: Merge] = [:]
        for (rank, merge) in merges.enumerated() {
            let first = bytes(merge.0), second = bytes(merge.1)
            // A merge whose parts or result the vocabulary lacks can never apply.
            guard let left = encoder[first], let right = encoder[second], let merged = encoder[first + second] else { continue }
            let pair = Pair(first: left, second: right)
            if table[pair] == nil { table[pair] = Merge(rank: rank, merged: merged) }
        }
        self.merges = table
        self.byteTokens = (0..<256).map { encoder[[UInt8($0)]] }
        self.vocabularySize = (vocabulary.values.max() ?? -1) + 1
        self.endOfText = vocabulary["<|endoftext|>"]
    }

    /// GPT-2's reversible byte -> printable character table.
    static func byteTable() -> [Character] {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var mapped = printable
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            mapped.append(256 + extra)
            extra += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (byte, scalar) in zip(printable, mapped) {
            table[byte] = Character(Unicode.Scalar(UInt32(scalar))!)  // safe: 33...323 are valid scalars
        }
        return table
    }

    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for piece in Self.pretokenize(text) {
            let key = Array(piece.utf8)
            if let cached = cache.withLock({ $0[key] }) {
                ids += cached
                continue
            }
            let encoded = bpe(key)
            cache.withLock { cache in
                if cache.count > 50_000 { cache.removeAll() }
                cache[key] = encoded
            }
            ids += encoded
        }
        return ids
    }

    public func bytes(_ tokens: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        for token in tokens { out += decoder[token] ?? [] }
        return out
    }

    /// The bytes of one token.
    package func tokenBytes(_ token: Int) -> [UInt8] { decoder[token] ?? [] }

    /// One piece's tokens: its bytes' tokens, merged pairwise by lowest rank until no pair merges.
    private func bpe(_ piece: [UInt8]) -> [Int] {
        // A byte missing from a custom vocabulary becomes token 0 and merges with nothing.
        var symbols = piece.map { byteTokens[Int($0)] ?? -1 }
        while symbols.count > 1 {
            var best: (rank: Int, pair: Pair, merged: Int)?
            for index in 0..<(symbols.count - 1) {
                let pair = Pair(first: symbols[index], second: symbols[index + 1])
                if let merge = merges[pair], merge.rank < (best?.rank ?? Int.max) {
                    best = (merge.rank, pair, merge.merged)
                }
            }
            guard let best else { break }
            var merged: [Int] = []
            merged.reserveCapacity(symbols.count)
            var index = 0
            while index < symbols.count {
                if index < symbols.count - 1, symbols[index] == best.pair.first, symbols[index + 1] == best.pair.second {
                    merged.append(best.merged)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        return symbols.map { max($0, 0) }
    }

    // MARK: Pre-tokenisation

    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    static func pretokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let count = scalars.count
        var pieces: [String] = []
        var index = 0
        func piece(_ start: Int, _ end: Int) {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[start..<end])
            pieces.append(String(view))
        }
        while index < count {
            let scalar = scalars[index]
            // Contractions.
            if scalar == "'", index + 1 < count {
                let next = scalars[index + 1]
                if next == "s" || next == "t" || next == "m" || next == "d" {
                    piece(index, index + 2)
                    index += 2
                    continue
                }
                if index + 2 < count {
                    let pair = (next, scalars[index + 2])
                    if pair == ("r", "e") || pair == ("v", "e") || pair == ("l", "l") {
                        piece(index, index + 3)
                        index += 3
                        continue
                    }
                }
            }
            let afterSpace = scalar == " " ? index + 1 : index
            if afterSpace < count {
                let head = scalars[afterSpace]
                let run: ((Unicode.Scalar) -> Bool)?
                if isLetter(head) {
                    run = isLetter
                } else if isNumber(head) {
                    run = isNumber
                } else if !isSpace(head) {
                    run = { !isSpace($0) && !isLetter($0) && !isNumber($0) }
                } else {
                    run = nil
                }
                if let run {
                    var end = afterSpace + 1
                    while end < count, run(scalars[end]) { end += 1 }
                    piece(index, end)
                    index = end
                    continue
                }
            }
            // Whitespace: \s+(?!\S) leaves the last space for the next word; else \s+.
            var end = index
            while end < count, isSpace(scalars[end]) { end += 1 }
            if end == index { end = index + 1 }  // unreachable for valid input; never loop forever
            if end < count, end - index >= 2 {
                end -= 1
            }
            piece(index, end)
            index = end
        }
        return pieces
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
}

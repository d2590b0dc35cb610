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

/// Byte-pair encoding as the models ModelGate serves use it, exact to Hugging Face's
/// `tokenizers` and to llama.cpp:
/// - byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): each byte is a symbol, pieces come from
///   the model's split pattern (`PreTokenizer`);
/// - SentencePiece BPE (Llama 2, Mistral, TinyLlama): each character is a symbol, spaces are
///   `▁`, a `▁` goes before the text, and characters outside the vocabulary fall back to
///   their bytes' `<0xXX>` tokens.
/// Merges apply lowest rank first, leftmost among equals — ranks from a merge list, or from
/// the merged token's score (SentencePiece's own rule, for GGUF vocabularies).
///
/// Every table is keyed by bytes or token ids, never by `String`: Swift's `String` equality is
/// Unicode canonical equivalence, so a `String`-keyed cache would hand the tokens of `"≯"` to
/// `">\u{338}"` (different bytes, different tokens) — across requests and tenants.
public final class BPETokenizer: Tokenizer {
    package enum Symbols: Sendable, Equatable {
        case bytes
        /// SentencePiece: characters, with `<0xXX>` byte tokens for those outside the vocabulary.
        case characters(addPrefixSpace: Bool)
    }

    package enum MergeRule: Sendable {
        /// Merges in priority order, each as the ids of its two parts.
        case ranked([(String, String)])
        /// The merged token's score decides (higher first), as SentencePiece does.
        case scored([Float])
    }

    /// A token that is matched in the text before anything else: user-defined tokens always,
    /// special (control) tokens only where the caller asks (a chat template's own markup).
    package struct AddedToken: Sendable, Equatable {
        package var id: Int
        package var content: String
        package var special: Bool

        package init(id: Int, content: String, special: Bool) {
            self.id = id
            self.content = content
            self.special = special
        }
    }

    /// Everything a tokenizer is made of, from whichever file describes it.
    package struct Configuration: Sendable {
        /// Each id's text as the model file writes it (GPT-2's printable bytes for byte-level
        /// models; `▁` for spaces and `<0xXX>` for bytes in SentencePiece ones).
        package var tokens: [String]
        package var merges: MergeRule
        package var symbols: Symbols
        package var preTokenizer: PreTokenizer
        /// A piece that is itself a token is not merged (Llama 3's `ignore_merges`).
        package var ignoreMerges = false
        /// NFC before tokenizing (Qwen2's normalizer).
        package var normalizeNFC = false
        package var addedTokens: [AddedToken] = []
        /// Tokens that decode to nothing (control tokens such as `<|eot_id|>`).
        package var controlTokens: Set<Int> = []
        package var unknownToken: Int?
        package var beginOfText: Int?
        package var endOfText: Int?
        /// Put `beginOfText` before an encoded prompt (Llama 2's and Llama 3's tokenizers do).
        package var addBeginOfText = false

        package init(tokens: [String], merges: MergeRule, symbols: Symbols, preTokenizer: PreTokenizer) {
            self.tokens = tokens
            self.merges = merges
            self.symbols = symbols
            self.preTokenizer = preTokenizer
        }
    }

    struct Pair: Hashable {
        var first: Int
        var second: Int
    }

    struct Merge {
        var rank: Double
        var merged: Int
    }

    package let configuration: Configuration
    /// Token bytes (in the model's symbol space: raw bytes, or UTF-8 with `▁`) -> id.
    private let encoder: [[UInt8]: Int]
    /// Each id's bytes in the symbol space, and as decoded text.
    private let pieces: [[UInt8]]
    private let decoded: [[UInt8]]
    private let merges: [Pair: Merge]
    private let scores: [Float]
    /// The id of each single byte: the byte itself (byte-level), or its `<0xXX>` token.
    private let byteTokens: [Int?]
    /// Added tokens by first byte, longest first.
    private let addedByFirstByte: [UInt8: [(bytes: [UInt8], token: AddedToken)]]
    /// Pieces already encoded, by their bytes.
    private let cache = Mutex<[[UInt8]: [Int]]>([:])
    public let vocabularySize: Int
    /// The end-of-text id, when the vocabulary has one.
    package var endOfText: Int? { configuration.endOfText }
    package var beginOfText: Int? { configuration.beginOfText }

    package init(_ configuration: Configuration) {
        self.configuration = configuration
        let isByteLevel = configuration.symbols == .bytes
        var unicodeToByte: [Unicode.Scalar: UInt8] = [:]
        for (byte, character) in Self.byteTable().enumerated() {
            if let scalar = character.unicodeScalars.first { unicodeToByte[scalar] = UInt8(byte) }
        }
        func symbolBytes(_ token: String) -> [UInt8] {
            isByteLevel ? token.unicodeScalars.compactMap { unicodeToByte[$0] } : Array(token.utf8)
        }
        var encoder: [[UInt8]: Int] = [:]
        var pieces: [[UInt8]] = []
        var decoded: [[UInt8]] = []
        var byteTokens = [Int?](repeating: nil, count: 256)
        pieces.reserveCapacity(configuration.tokens.count)
        let addedIDs = Set(configuration.addedTokens.map(\.id))
        for (id, token) in configuration.tokens.enumerated() {
            let bytes = addedIDs.contains(id) ? Array(token.utf8) : symbolBytes(token)
            pieces.append(bytes)
            if configuration.controlTokens.contains(id) {
                decoded.append([])
            } else if !isByteLevel, let byte = Self.byteToken(token) {
                decoded.append([byte])
                if byteTokens[Int(byte)] == nil { byteTokens[Int(byte)] = id }
            } else if !isByteLevel {
                decoded.append(Array(token.replacingOccurrences(of: "\u{2581}", with: " ").utf8))
            } else {
                decoded.append(bytes)
            }
            // Added tokens are matched before merging, never by it.
            guard !addedIDs.contains(id) else { continue }
            // Two spellings of one byte string: the lower id wins.
            if encoder[bytes] == nil { encoder[bytes] = id }
        }
        if isByteLevel { byteTokens = (0..<256).map { encoder[[UInt8($0)]] } }
        var table: [Pair: Merge] = [:]
        var scores: [Float] = []
        switch configuration.merges {
        case .ranked(let list):
            for (rank, merge) in list.enumerated() {
                let first = symbolBytes(merge.0), second = symbolBytes(merge.1)
                // A merge whose parts or result the vocabulary lacks can never apply.
                guard let left = encoder[first], let right = encoder[second], let merged = encoder[first + second] else { continue }
                let pair = Pair(first: left, second: right)
                if table[pair] == nil { table[pair] = Merge(rank: Double(rank), merged: merged) }
            }
        case .scored(let values):
            scores = values
        }
        var added: [UInt8: [(bytes: [UInt8], token: AddedToken)]] = [:]
        for token in configuration.addedTokens {
            let bytes = Array(token.content.utf8)
            guard let first = bytes.first else { continue }
            added[first, default: []].append((bytes, token))
        }
        for key in added.keys { added[key]?.sort { $0.bytes.count > $1.bytes.count } }
        self.encoder = encoder
        self.pieces = pieces
        self.decoded = decoded
        self.merges = table
        self.scores = scores
        self.byteTokens = byteTokens
        self.addedByFirstByte = added
        self.vocabularySize = configuration.tokens.count
    }

    /// `<0xAB>` -> 0xAB.
    static func byteToken(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
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

    // MARK: Encoding

    /// The tokens of user text: special tokens' text stays plain text.
    public func encode(_ text: String) -> [Int] { encode(text, parseSpecial: false) }

    /// The tokens of `text`, matching special tokens' text as the tokens themselves when
    /// `parseSpecial` (for markup a chat template wrote, never for what a user wrote).
    package func encode(_ text: String, parseSpecial: Bool) -> [Int] {
        encode(text) { _ in parseSpecial }
    }

    /// The tokens of a rendered chat template: special tokens only where the template wrote them.
    package func encode(_ prompt: ChatTemplate.Rendered) -> [Int] {
        encode(prompt.text) { range in prompt.markup[range].allSatisfy { $0 } }
    }

    /// The tokens of `text`, where a special token's text at a range of UTF-8 offsets is that
    /// token if `special` says so (user-defined added tokens always are).
    private func encode(_ text: String, special: (Range<Int>) -> Bool) -> [Int] {
        var ids: [Int] = []
        var segment: [UInt8] = []
        let utf8 = Array(text.utf8)
        var index = 0
        while index < utf8.count {
            if let candidates = addedByFirstByte[utf8[index]],
                let match = candidates.first(where: {
                    utf8[index...].starts(with: $0.bytes) && (!$0.token.special || special(index..<(index + $0.bytes.count)))
                })
            {
                encodeSegment(segment, into: &ids)
                segment.removeAll()
                ids.append(match.token.id)
                index += match.bytes.count
                continue
            }
            segment.append(utf8[index])
            index += 1
        }
        encodeSegment(segment, into: &ids)
        return ids
    }

    /// One run of text between added tokens. SentencePiece's `▁` goes before each run, as
    /// llama.cpp puts it at the start and after every special token.
    private func encodeSegment(_ utf8: [UInt8], into ids: inout [Int]) {
        guard !utf8.isEmpty else { return }
        var text = String(decoding: utf8, as: UTF8.self)
        if configuration.normalizeNFC { text = text.precomposedStringWithCanonicalMapping }
        switch configuration.symbols {
        case .bytes:
            let scalars = Array(text.unicodeScalars)
            let utf8 = Array(text.utf8)
            // Each scalar's first byte, and the end.
            var offsets = [Int](repeating: 0, count: scalars.count + 1)
            for (index, scalar) in scalars.enumerated() { offsets[index + 1] = offsets[index] + UTF8.width(scalar) }
            for range in configuration.preTokenizer.split(scalars) {
                ids += encodePiece(Array(utf8[offsets[range.lowerBound]..<offsets[range.upperBound]]))
            }
        case .characters(let addPrefixSpace):
            var spaced = text.replacingOccurrences(of: " ", with: "\u{2581}")
            if addPrefixSpace { spaced = "\u{2581}" + spaced }
            let scalars = Array(spaced.unicodeScalars)
            for range in configuration.preTokenizer.split(scalars) {
                var view = String.UnicodeScalarView()
                view.append(contentsOf: scalars[range])
                ids += encodePiece(Array(String(view).utf8))
            }
        }
    }

    /// One piece's tokens, cached by its bytes when it is short.
    private func encodePiece(_ piece: [UInt8]) -> [Int] {
        let cacheable = piece.count <= 256
        if cacheable, let cached = cache.withLock({ $0[piece] }) { return cached }
        let encoded: [Int]
        if configuration.ignoreMerges, let whole = encoder[piece] {
            encoded = [whole]
        } else {
            encoded = bpe(piece)
        }
        if cacheable {
            cache.withLock { cache in
                if cache.count > 50_000 { cache.removeAll() }
                cache[piece] = encoded
            }
        }
        return encoded
    }

    /// The rank and result of merging two adjacent symbols, if they merge.
    private func merge(_ left: Int, _ right: Int) -> Merge? {
        guard left >= 0, right >= 0 else { return nil }
        if scores.isEmpty { return merges[Pair(first: left, second: right)] }
        guard let merged = encoder[pieces[left] + pieces[right]], merged < scores.count else { return nil }
        return Merge(rank: -Double(scores[merged]), merged: merged)
    }

    /// Merges a piece's symbols until none merge: the best-ranked pair first, the leftmost of
    /// equal ones, one merge at a time (a heap of candidate pairs over a linked list of symbols).
    private func bpe(_ piece: [UInt8]) -> [Int] {
        var symbols: [Int] = []
        var unknown: [Int: [UInt8]] = [:]  // symbol index -> the bytes of a character outside the vocabulary
        switch configuration.symbols {
        case .bytes:
            symbols = piece.map { byteTokens[Int($0)] ?? -1 }
        case .characters:
            for scalar in String(decoding: piece, as: UTF8.self).unicodeScalars {
                let bytes = Array(String(scalar).utf8)
                if let id = encoder[bytes] {
                    symbols.append(id)
                } else {
                    unknown[symbols.count] = bytes
                    symbols.append(-1)
                }
            }
        }
        let count = symbols.count
        if count >= 2 {
            var next = Array(1...count)
            next[count - 1] = -1
            var previous = Array(-1..<(count - 1))
            var heap = CandidateHeap()
            func consider(_ left: Int) {
                guard left >= 0 else { return }
                let right = next[left]
                guard right >= 0, let merge = merge(symbols[left], symbols[right]) else { return }
                heap.push(.init(rank: merge.rank, left: left, leftSymbol: symbols[left], rightSymbol: symbols[right], merged: merge.merged))
            }
            for index in 0..<(count - 1) { consider(index) }
            while let candidate = heap.pop() {
                let left = candidate.left
                let right = next[left]
                // Stale: a side has merged since this pair was seen.
                guard symbols[left] == candidate.leftSymbol, right >= 0, symbols[right] == candidate.rightSymbol else { continue }
                symbols[left] = candidate.merged
                symbols[right] = -2
                next[left] = next[right]
                if next[right] >= 0 { previous[next[right]] = left }
                consider(previous[left])
                consider(left)
            }
        }
        var ids: [Int] = []
        for (index, symbol) in symbols.enumerated() where symbol != -2 {
            if symbol >= 0 {
                ids.append(symbol)
            } else if let bytes = unknown[index] ?? (configuration.symbols == .bytes ? [piece[index]] : nil) {
                for byte in bytes {
                    if let id = byteTokens[Int(byte)] ?? configuration.unknownToken { ids.append(id) }
                }
            }
        }
        return ids
    }

    // MARK: Decoding

    public func bytes(_ tokens: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        for token in tokens { out += tokenBytes(token) }
        return out
    }

    /// The bytes of one token as generated text shows it (nothing for control tokens).
    package func tokenBytes(_ token: Int) -> [UInt8] { decoded.indices.contains(token) ? decoded[token] : [] }

    /// Text as Hugging Face's decoder gives it back: without the space SentencePiece put first.
    package func decodeText(_ tokens: [Int]) -> String {
        var bytes = bytes(tokens)
        if case .characters(true) = configuration.symbols, bytes.first == UInt8(ascii: " ") { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A pair of adjacent symbols that may merge, ordered by rank then position.
private struct Candidate {
    var rank: Double
    var left: Int
    var leftSymbol: Int
    var rightSymbol: Int
    var merged: Int

    func precedes(_ other: Candidate) -> Bool { rank < other.rank || (rank == other.rank && left < other.left) }
}

/// A binary min-heap of candidates.
private struct CandidateHeap {
    private var items: [Candidate] = []

    mutating func push(_ item: Candidate) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var best = parent
                if left < items.count, items[left].precedes(items[best]) { best = left }
                if right < items.count, items[right].precedes(items[best]) { best = right }
                guard best != parent else { break }
                items.swapAt(parent, best)
                parent = best
            }
        }
        return first
    }
}

import Foundation
import Testing

@testable import Gateway

@Suite struct JSONSpliceTests {
    static func object(_ bytes: [UInt8]) -> NSDictionary? {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? NSDictionary
    }

    static let tricky = #"""
         { "id" : "x\"}{", "model":"llama.gguf","choices":[{"text":"a}\\\"b","n":[1,{"z":"]"}]}], "usage" : {"prompt_tokens": 2, "completion_tokens": 3},
        "timings": {"a": 1.5e-3, "b": -0}, "flag": true, "none": null }
        """#

    @Test func editsAgreeWithTheDecodedObject() throws {
        let bytes = Array(Self.tricky.utf8)
        let splice = try #require(JSONSplice(bytes))
        #expect(splice.members.map { String(decoding: $0.key, as: UTF8.self) } == ["id", "model", "choices", "usage", "timings", "flag", "none"])
        let original = try #require(Self.object(bytes))
        for remove in [[], ["id"], ["usage"], ["none"], ["id", "model", "choices", "usage", "timings", "flag", "none"]] as [Set<String>] {
            for set in [[], [("model", "llama \"3\" \\ é")], [("model", "m"), ("added", "x")]] as [[(String, String)]] {
                let edited = splice.edited(set: set.map { ($0.0, JSONSplice.string($0.1)) }, remove: remove)
                let expected = original.mutableCopy() as! NSMutableDictionary  // test only
                for key in remove { expected.removeObject(forKey: key) }
                for (key, value) in set { expected[key] = value }
                #expect(Self.object(edited) == expected, "remove \(remove), set \(set): \(String(decoding: edited, as: UTF8.self))")
            }
        }
        // What is not edited is left byte for byte (numbers as the upstream wrote them).
        let edited = String(decoding: splice.edited(set: [("model", JSONSplice.string("fleet"))]), as: UTF8.self)
        #expect(edited == Self.tricky.replacingOccurrences(of: "\"llama.gguf\"", with: "\"fleet\""))
    }

    /// Random objects (strings with quotes, braces and escapes, nested lists and objects,
    /// numbers), written with and without spacing, and random edits: always what editing the
    /// decoded object gives.
    @Test func randomObjectsAndEditsAgreeWithTheDecoder() throws {
        var generator = SystemRandomNumberGenerator()
        let pieces = ["a", "\"", "\\", "{", "}", "[", "]", ",", ":", " ", "\n", "é", "\u{1}"]
        func value(_ depth: Int) -> Any {
            switch Int.random(in: 0..<(depth > 2 ? 4 : 6), using: &generator) {
            case 0: return (0..<Int.random(in: 0..<6, using: &generator)).map { _ in pieces.randomElement(using: &generator) ?? "" }.joined()
            case 1: return Double(Int.random(in: -1000...1000, using: &generator)) / 8
            case 2: return Bool.random(using: &generator)
            case 3: return NSNull()
            case 4: return (0..<Int.random(in: 0..<4, using: &generator)).map { _ in value(depth + 1) }
            default: return Dictionary(uniqueKeysWithValues: (0..<Int.random(in: 0..<4, using: &generator)).map { ("k\($0)", value(depth + 1)) })
            }
        }
        for _ in 0..<500 {
            let keys = (0..<Int.random(in: 0..<6, using: &generator)).map { "m\($0)" }
            let object = Dictionary(uniqueKeysWithValues: keys.map { ($0, value(0)) })
            let bytes = Array(try JSONSerialization.data(withJSONObject: object, options: Bool.random() ? [.prettyPrinted] : []))
            let splice = try #require(JSONSplice(bytes), "\(String(decoding: bytes, as: UTF8.self))")
            let remove = Set(keys.filter { _ in Bool.random(using: &generator) })
            let set = ["m0", "m9", "model"].filter { _ in Bool.random(using: &generator) }.map { ($0, "v\($0)") }
            let edited = splice.edited(set: set.map { ($0.0, JSONSplice.string($0.1)) }, remove: remove)
            let expected = try #require(Self.object(bytes)).mutableCopy() as! NSMutableDictionary  // test only
            for key in remove { expected.removeObject(forKey: key) }
            for (key, value) in set { expected[key] = value }
            #expect(Self.object(edited) == expected, "\(String(decoding: bytes, as: UTF8.self)) -> \(String(decoding: edited, as: UTF8.self))")
        }
    }

    @Test func anEmptyObjectTakesMembers() throws {
        let splice = try #require(JSONSplice(Array(" { } ".utf8)))
        let edited = splice.edited(set: [("a", Array("1".utf8)), ("b", Array("[2]".utf8))])
        #expect(Self.object(edited) == ["a": 1, "b": [2]] as NSDictionary)
    }

    @Test(arguments: ["", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":\"x}", "{\"a\":1,}", "{\"a\":1 \"b\":2}", "\"x\""])
    func whatIsNotAnObjectIsLeftToTheDecoder(text: String) {
        #expect(JSONSplice(Array(text.utf8)) == nil)
    }

    @Test func controlCharactersAreEscaped() {
        let json = JSONSplice.string("a\u{1}\n\t\"\\b")
        #expect((try? JSONSerialization.jsonObject(with: Data(json), options: .fragmentsAllowed)) as? String == "a\u{1}\n\t\"\\b")
    }
}

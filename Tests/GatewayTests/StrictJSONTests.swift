import Foundation
import Testing
@testable import Gateway

@Suite struct StrictJSONTests {
    struct Part: Decodable { var type: String; var text: String? }
    struct Message: Decodable { var role: String; var content: [Part]? }
    struct Options: Decodable { var include_usage: Bool? }
    struct Body: Decodable {
        var model: String
        var messages: [Message]
        var stream_options: Options?
        var limits: [String: Int]?
        var expires_at: Date?
    }

    static func decode(_ json: String) throws -> Body {
        try JSONBody.decode(Body.self, Array(json.utf8))
    }

    static func error(_ json: String) -> OpenAIError? {
        do {
            _ = try decode(json)
            return nil
        } catch {
            return error as? OpenAIError
        }
    }

    @Test func everyMemberReadIsAccepted() throws {
        let body = try Self.decode(#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream_options": {"include_usage": true}, "limits": {"a": 1}, "expires_at": "2030-01-01T00:00:00Z"}"#)
        #expect(body.messages.first?.content?.first?.text == "hi")
        #expect(body.limits == ["a": 1])
        #expect(body.expires_at != nil)
    }

    @Test func unknownMembersAreNamedWhereverTheyAre() {
        let top = Self.error(#"{"model": "m", "messages": [], "modle": "x"}"#)
        #expect(top?.status == .badRequest)
        #expect(top?.param == "modle")
        #expect(top?.code == "unknown_parameter")
        let nested = Self.error(#"{"model": "m", "messages": [{"role": "user"}, {"role": "user", "nmae": "x"}]}"#)
        #expect(nested?.param == "messages[1].nmae", "\(nested?.message ?? "")")
        let deeper = Self.error(#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "txt": "x"}]}]}"#)
        #expect(deeper?.param == "messages[0].content[0].txt")
        let options = Self.error(#"{"model": "m", "messages": [], "stream_options": {"include_usage": true, "x": null}}"#)
        #expect(options?.param == "stream_options.x")
        let two = Self.error(#"{"model": "m", "messages": [], "b": 1, "a": 2}"#)
        #expect(two?.message == "Unknown parameters: 'a', 'b'.")
    }

    @Test func typeErrorsNameTheFieldAndBothTypes() {
        let wrong = Self.error(#"{"model": 5, "messages": []}"#)
        #expect(wrong?.message == "Invalid type for 'model': expected a string, but got an integer instead.")
        #expect(wrong?.param == "model")
        #expect(wrong?.code == "invalid_type")
        let nested = Self.error(#"{"model": "m", "messages": [{"role": true}]}"#)
        #expect(nested?.message == "Invalid type for 'messages[0].role': expected a string, but got a boolean instead.")
        let null = Self.error(#"{"model": null, "messages": []}"#)
        #expect(null?.message == "Invalid type for 'model': expected a string, but got null instead.")
        let missing = Self.error(#"{"messages": []}"#)
        #expect(missing?.param == "model")
        #expect(missing?.code == "missing_required_parameter")
        #expect(Self.error("{")?.message == "request body is not valid JSON")
    }
}

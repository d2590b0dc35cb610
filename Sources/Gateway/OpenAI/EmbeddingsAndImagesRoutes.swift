import Foundation
import HTTPTypes
import Hummingbird
import Inference
import Metering
import Tenancy

/// `POST /v1/embeddings` (OpenAI) and `POST /v1/images/classifications` (ours).
struct EmbeddingsAndImagesRoutes {
    let pipeline: InferencePipeline
    let imageLimits: ImageLimits

    struct EmbeddingRequest: Decodable, Sendable {
        var model: String
        var input: PromptInput
        var encoding_format: String?
        var dimensions: Int?
        var user: String?
    }

    struct EmbeddingResponse: Encodable, Sendable {
        struct Item: Encodable, Sendable {
            var object = "embedding"
            var index: Int
            var embedding: Vector
        }
        enum Vector: Encodable, Sendable {
            case floats([Float])
            case base64(String)
            func encode(to encoder: any Encoder) throws {
                var container = encoder.singleValueContainer()
                switch self {
                case .floats(let values): try container.encode(values)
                case .base64(let text): try container.encode(text)
                }
            }
        }
        struct EmbeddingUsage: Encodable, Sendable {
            var prompt_tokens: Int
            var total_tokens: Int
        }
        var object = "list"
        var data: [Item]
        var model: String
        var usage: EmbeddingUsage
    }

    struct ClassificationRequest: Decodable, Sendable {
        var model: String
        var image: String?
        var images: [String]?
        var top_k: Int?
    }

    struct ClassificationResponse: Encodable, Sendable {
        struct Label: Encodable, Sendable {
            var label: String
            var score: Float
        }
        struct Item: Encodable, Sendable {
            var index: Int
            var labels: [Label]
        }
        struct ImageUsage: Encodable, Sendable { var images: Int }
        var object = "list"
        var model: String
        var data: [Item]
        var usage: ImageUsage
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.post("embeddings") { request, context in
            try await pipeline.serve(request, context, route: "/v1/embeddings") { body, _ in try Self.embeddingCall(body) }
        }
        let imageLimits = self.imageLimits
        group.post("images/classifications") { request, context in
            try await pipeline.serve(request, context, route: "/v1/images/classifications") { body, request in
                try Self.classificationCall(request, body, limits: imageLimits)
            }
        }
    }

    static func embeddingCall(_ body: [UInt8]) throws -> InferenceCall {
        let decoded = try JSONBody.decode(EmbeddingRequest.self, body)
        return InferenceCall(model: decoded.model, task: .embeddings) { engine, info in
            if let upstream = engine.upstream {
                guard (1...2048).contains(decoded.input.count) else { throw OpenAIError.invalidRequest("input must hold 1 to 2048 items", param: "input") }
                let tokens: Int
                switch decoded.input {
                case .texts(let texts): tokens = texts.reduce(0) { $0 + upstream.promptTokens($1) }
                case .tokens(let lists): tokens = lists.reduce(0) { $0 + $1.count }
                }
                return try UpstreamWork.embedding(upstream, info: info, clientModel: decoded.model, body: body, promptTokens: tokens).prepared()
            }
            guard case .embeddings(let service) = engine else { throw InferencePipeline.modelNotFound(decoded.model) }
            let format = decoded.encoding_format ?? "float"
            guard format == "float" || format == "base64" else {
                throw OpenAIError.invalidRequest("encoding_format must be 'float' or 'base64'", param: "encoding_format")
            }
            if let dimensions = decoded.dimensions, dimensions != service.encoder.config.width {
                throw OpenAIError.invalidRequest("this model produces \(service.encoder.config.width) dimensions", param: "dimensions")
            }
            guard (1...2048).contains(decoded.input.count) else { throw OpenAIError.invalidRequest("input must hold 1 to 2048 items", param: "input") }
            let sequences: [[Int]]
            switch decoded.input {
            case .texts(let texts):
                guard texts.allSatisfy({ !$0.isEmpty }) else { throw OpenAIError.invalidRequest("input must not contain empty strings", param: "input") }
                sequences = texts.map(service.tokenize)
            case .tokens(let lists):
                let vocabulary = service.encoder.config.vocabularySize
                guard lists.allSatisfy({ !$0.isEmpty && $0.count <= service.encoder.config.maxSequenceLength && $0.allSatisfy { (0..<vocabulary).contains($0) } }) else {
                    throw OpenAIError.invalidRequest("token ids must be in 0..<\(vocabulary), 1 to \(service.encoder.config.maxSequenceLength) per input", param: "input")
                }
                sequences = lists
            }
            let tokens = sequences.reduce(0) { $0 + $1.count }
            let model = decoded.model  // as the client named it
            return PreparedWork(worstCase: .embedding(tokens: tokens)) { context in
                let vectors = try await service.embed(sequences, fairnessKey: context.fairnessKey)
                context.tally.setPrompt(tokens)
                let items = vectors.enumerated().map { index, vector in
                    EmbeddingResponse.Item(index: index, embedding: format == "base64" ? .base64(Self.base64(vector)) : .floats(vector))
                }
                return .body(try ResponseJSON.encode(EmbeddingResponse(data: items, model: model, usage: .init(prompt_tokens: tokens, total_tokens: tokens))))
            }
        }
    }

    /// Little-endian float32s, base64 (what OpenAI's clients decode).
    static func base64(_ vector: [Float]) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(vector.count * 4)
        for value in vector { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 } }
        return Data(bytes).base64EncodedString()
    }

    /// What a classification request may decode: per image and for all its images together.
    struct ImageLimits: Sendable {
        var maxPixels: Int
        var maxPixelsPerRequest: Int
    }

    /// Images are sized from their headers before admission (a bomb or a request over its
    /// pixel budget is refused without decoding a pixel) and decoded only after it: a key
    /// over its limits never makes the server decode anything.
    static func classificationCall(_ request: Request, _ body: [UInt8], limits: ImageLimits) throws -> InferenceCall {
        let (model, encodedImages, topK) = try parseClassification(request, body)
        return InferenceCall(model: model, task: .imageClassification) { engine, _ in
            guard case .images(let service) = engine else { throw InferencePipeline.modelNotFound(model) }
            guard (1...64).contains(encodedImages.count) else { throw OpenAIError.invalidRequest("send 1 to 64 images", param: "images") }
            guard (1...100).contains(topK) else { throw OpenAIError.invalidRequest("top_k must be between 1 and 100", param: "top_k") }
            var total = 0
            for (index, encoded) in encodedImages.enumerated() {
                let param = encodedImages.count == 1 ? "image" : "images[\(index)]"
                do {
                    let (width, height) = try service.classifier.decoder.dimensions(encoded)
                    let pixels = width.multipliedReportingOverflow(by: height)
                    guard !pixels.overflow, pixels.partialValue <= limits.maxPixels else {
                        throw ImageError.tooLarge("\(width)x\(height) pixels, the limit is \(limits.maxPixels)")
                    }
                    total += pixels.partialValue
                } catch let error as ImageError {
                    throw ErrorMapping.map(error, param: param)
                }
                guard total <= limits.maxPixelsPerRequest else {
                    throw OpenAIError(
                        status: .contentTooLarge,
                        message: "the request's images hold more than \(limits.maxPixelsPerRequest) pixels together; send fewer or smaller images",
                        type: "invalid_request_error", param: "images", code: "image_too_large")
                }
            }
            let name = model  // as the client named it
            return PreparedWork(worstCase: .images(encodedImages.count)) { context in
                var prepared: [[Float]] = []
                for (index, encoded) in encodedImages.enumerated() {
                    do {
                        prepared.append(try await Task.detached { try service.prepare(encoded) }.value)
                    } catch let error as ImageError {
                        throw RefusedInput(error: ErrorMapping.map(error, param: encodedImages.count == 1 ? "image" : "images[\(index)]"))
                    }
                }
                let predictions = try await service.classify(prepared, topK: topK, fairnessKey: context.fairnessKey)
                context.tally.setImages(prepared.count)
                let response = ClassificationResponse(
                    model: name,
                    data: predictions.enumerated().map { index, labels in .init(index: index, labels: labels.map { .init(label: $0.label, score: $0.score) }) },
                    usage: .init(images: prepared.count))
                return .body(try ResponseJSON.encode(response))
            }
        }
    }

    /// JSON (`image` or `images`: base64 or data URLs) or multipart/form-data (`file` parts,
    /// `model` and `top_k` fields).
    static func parseClassification(_ request: Request, _ body: [UInt8]) throws -> (String, [[UInt8]], Int) {
        let contentType = request.headers[.contentType] ?? "application/json"
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            let parts = try Multipart.parse(body, contentType: contentType)
            guard let model = parts.first(where: { $0.name == "model" }).map({ String(decoding: $0.body, as: UTF8.self) }) else {
                throw OpenAIError.invalidRequest("missing required parameter 'model'", param: "model")
            }
            // Strict as JSON bodies are: a field the route does not know is refused, not ignored.
            for part in parts where part.filename == nil && !["model", "top_k", "file", "image", "images"].contains(part.name ?? "") {
                throw OpenAIError.invalidRequest("Unknown parameter: '\(part.name ?? "")'.", param: part.name, code: "unknown_parameter")
            }
            let files = parts.filter { $0.name == "file" || $0.name == "image" || $0.name == "images" || $0.filename != nil }.map(\.body)
            guard !files.isEmpty else { throw OpenAIError.invalidRequest("send the images as 'file' parts", param: "file") }
            let topK = try parts.first { $0.name == "top_k" }.map { part -> Int in
                guard let value = Int(String(decoding: part.body, as: UTF8.self).trimmingCharacters(in: .whitespaces)) else {
                    throw OpenAIError.invalidRequest("top_k must be an integer", param: "top_k")
                }
                return value
            } ?? 5
            return (model, files, topK)
        }
        guard contentType.lowercased().hasPrefix("application/json") else {
            throw OpenAIError(status: .unsupportedMediaType, message: "send application/json or multipart/form-data", type: "invalid_request_error", code: "unsupported_media_type")
        }
        let decoded = try JSONBody.decode(ClassificationRequest.self, body)
        let sources = (decoded.image.map { [$0] } ?? []) + (decoded.images ?? [])
        guard !sources.isEmpty else { throw OpenAIError.invalidRequest("send 'image' or 'images'", param: "image") }
        let images = try sources.enumerated().map { index, text -> [UInt8] in
            var payload = Substring(text)
            if payload.hasPrefix("data:"), let comma = payload.firstIndex(of: ",") { payload = payload[payload.index(after: comma)...] }
            guard let data = Data(base64Encoded: String(payload), options: .ignoreUnknownCharacters), !data.isEmpty else {
                throw OpenAIError.invalidRequest("image is not valid base64", param: sources.count == 1 ? "image" : "images[\(index)]", code: "invalid_image")
            }
            return Array(data)
        }
        return (decoded.model, images, decoded.top_k ?? 5)
    }
}

/// A minimal multipart/form-data reader (RFC 7578): parts with a name, an optional file name and
/// a body. Enough for uploads; bounded by the request body limit.
enum Multipart {
    struct Part {
        var name: String?
        var filename: String?
        var body: [UInt8]
    }

    static func parse(_ body: [UInt8], contentType: String) throws -> [Part] {
        guard let boundaryRange = contentType.range(of: "boundary=") else {
            throw OpenAIError.invalidRequest("multipart/form-data without a boundary")
        }
        var boundary = String(contentType[boundaryRange.upperBound...])
        if let semicolon = boundary.firstIndex(of: ";") { boundary = String(boundary[..<semicolon]) }
        boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        guard !boundary.isEmpty, boundary.count <= 200 else { throw OpenAIError.invalidRequest("invalid multipart boundary") }
        let delimiter = Array(("--" + boundary).utf8)
        var parts: [Part] = []
        var positions: [Int] = []
        var index = 0
        while let found = find(delimiter, in: body, from: index) {
            positions.append(found)
            index = found + delimiter.count
        }
        guard positions.count >= 2 else { throw OpenAIError.invalidRequest("malformed multipart body") }
        for (start, end) in zip(positions, positions.dropFirst()) {
            var section = Array(body[(start + delimiter.count)..<end])
            if section.starts(with: [13, 10]) { section.removeFirst(2) }
            if section.suffix(2) == [13, 10] { section.removeLast(2) }
            guard let split = find([13, 10, 13, 10], in: section, from: 0) else { throw OpenAIError.invalidRequest("malformed multipart part") }
            let headers = String(decoding: section[..<split], as: UTF8.self)
            var part = Part(name: nil, filename: nil, body: Array(section[(split + 4)...]))
            for line in headers.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
                part.name = attribute("name", in: line)
                part.filename = attribute("filename", in: line)
            }
            parts.append(part)
        }
        return parts
    }

    static func attribute(_ name: String, in line: String) -> String? {
        for piece in line.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) where piece.hasPrefix(name + "=") {
            return piece.dropFirst(name.count + 1).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard needle.count <= haystack.count - start, start >= 0 else { return nil }
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index] == needle[0], haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}

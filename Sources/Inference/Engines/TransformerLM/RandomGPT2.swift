import Foundation

/// Writes a GPT-2 folder (`config.json`, `model.safetensors`) with seeded random weights of any
/// shape: for benchmarks (speed does not depend on values) and tests that need a slower model.
package enum RandomGPT2 {
    package static func write(_ config: GPT2Model.Config, seed: UInt64, to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var random = SeededGenerator(seed: seed)
        let c = config.width
        var shapes: [(String, [Int], Float)] = [
            ("wte.weight", [config.vocabularySize, c], 0.02), ("wpe.weight", [config.contextLength, c], 0.01),
            ("ln_f.weight", [c], -1), ("ln_f.bias", [c], 0),
        ]
        for layer in 0..<config.layers {
            let p = "h.\(layer)."
            shapes += [
                (p + "ln_1.weight", [c], -1), (p + "ln_1.bias", [c], 0),
                (p + "attn.c_attn.weight", [c, 3 * c], 0.02), (p + "attn.c_attn.bias", [3 * c], 0),
                (p + "attn.c_proj.weight", [c, c], 0.02), (p + "attn.c_proj.bias", [c], 0),
                (p + "ln_2.weight", [c], -1), (p + "ln_2.bias", [c], 0),
                (p + "mlp.c_fc.weight", [c, 4 * c], 0.02), (p + "mlp.c_fc.bias", [4 * c], 0),
                (p + "mlp.c_proj.weight", [4 * c, c], 0.02), (p + "mlp.c_proj.bias", [c], 0),
            ]
        }
        // scale -1 means "ones" (layer-norm gains); 0 means zeros.
        let buffers = shapes.map { name, shape, scale -> (String, [Int], [Float]) in
            let count = shape.reduce(1, *)
            let values: [Float] = scale < 0
                ? [Float](repeating: 1, count: count)
                : (0..<count).map { _ in scale == 0 ? 0 : Float(random.unit() * 2 - 1) * scale * 1.7 }
            return (name, shape, values)
        }
        try withBuffers(buffers[...]) { tensors in
            try SafetensorsWriter.write(tensors, to: directory + "/model.safetensors")
        }
        let json: [String: Any] = [
            "model_type": "gpt2", "n_layer": config.layers, "n_head": config.heads, "n_embd": c,
            "n_positions": config.contextLength, "vocab_size": config.vocabularySize, "layer_norm_epsilon": Double(config.layerNormEpsilon),
        ]
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])
            .write(to: URL(fileURLWithPath: directory + "/config.json"))
    }

    private static func withBuffers(
        _ remaining: ArraySlice<(String, [Int], [Float])>, collected: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = [],
        _ body: ([(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)]) throws -> Void
    ) throws {
        guard let first = remaining.first else { return try body(collected) }
        try first.2.withUnsafeBufferPointer { buffer in
            try withBuffers(remaining.dropFirst(), collected: collected + [(first.0, first.1, buffer)], body)
        }
    }
}

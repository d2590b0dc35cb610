import Foundation

/// torchvision's evaluation transform: `Resize(shorter side)` (bilinear, antialiased when
/// shrinking), `CenterCrop`, `ToTensor` (scale to [0, 1]), `Normalize(mean, std)`. The result
/// is NHWC floats for one image.
package struct ImagePreprocessing: Sendable, Equatable {
    /// Resize so the shorter side has this length (nil: no resize).
    package var resize: Int?
    /// Crop the centre to this size (height, width); also the network's input size.
    package var crop: (height: Int, width: Int)
    package var mean: [Float]
    package var std: [Float]

    package static func == (lhs: ImagePreprocessing, rhs: ImagePreprocessing) -> Bool {
        lhs.resize == rhs.resize && lhs.crop == rhs.crop && lhs.mean == rhs.mean && lhs.std == rhs.std
    }

    package static let imagenetMean: [Float] = [0.485, 0.456, 0.406]
    package static let imagenetStd: [Float] = [0.229, 0.224, 0.225]

    package init(resize: Int?, crop: (height: Int, width: Int), mean: [Float] = imagenetMean, std: [Float] = imagenetStd) {
        self.resize = resize
        self.crop = crop
        self.mean = mean
        self.std = std
    }

    /// From a manifest's options: `resize`, `crop` (or `input_size`), `mean`, `std`.
    package init(options: [String: JSONValue]) throws {
        let file = "model.json"
        let input = try options.positiveInt("crop", file: file) ?? options.positiveInt("input_size", file: file) ?? 224
        self.init(
            resize: try options.positiveInt("resize", file: file) ?? (options["input_size"] == nil ? 256 : nil),
            crop: (input, input),
            mean: options["mean"]?.array?.compactMap { $0.number.map(Float.init) } ?? Self.imagenetMean,
            std: options["std"]?.array?.compactMap { $0.number.map(Float.init) } ?? Self.imagenetStd)
        guard mean.count == 3, std.count == 3, std.allSatisfy({ $0 > 0 }), crop.height > 0 else {
            throw ModelLoadError(file: "model.json", reason: "preprocessing needs 3 means, 3 positive stds and a positive crop")
        }
    }

    /// The image as a network input `[crop.height, crop.width, 3]`.
    package func apply(_ image: RGBImage) -> [Float] {
        var current = image
        if let resize {
            let scale = Double(resize) / Double(min(image.width, image.height))
            // torchvision: the shorter side becomes `resize`, the longer is truncated.
            let (width, height) = image.width <= image.height
                ? (resize, Int(Double(image.height) * scale))
                : (Int(Double(image.width) * scale), resize)
            if width != image.width || height != image.height {
                current = Self.resize(image, width: width, height: height)
            }
        }
        if current.width < crop.width || current.height < crop.height {
            // Smaller than the crop: scale up to cover it (torchvision would pad; scaling keeps content).
            let scale = max(Double(crop.width) / Double(current.width), Double(crop.height) / Double(current.height))
            current = Self.resize(
                current, width: max(crop.width, Int((Double(current.width) * scale).rounded(.up))),
                height: max(crop.height, Int((Double(current.height) * scale).rounded(.up))))
        }
        // torchvision's CenterCrop rounds the offsets.
        let top = Int((Double(current.height - crop.height) / 2).rounded())
        let left = Int((Double(current.width - crop.width) / 2).rounded())
        var output = [Float](repeating: 0, count: crop.height * crop.width * 3)
        let scale = mean.indices.map { 1 / (255 * std[$0]) }
        let offset = mean.indices.map { mean[$0] / std[$0] }
        for y in 0..<crop.height {
            for x in 0..<crop.width {
                let source = ((top + y) * current.width + left + x) * 3
                let destination = (y * crop.width + x) * 3
                for c in 0..<3 {
                    output[destination + c] = Float(current.pixels[source + c]) * scale[c] - offset[c]
                }
            }
        }
        return output
    }

    /// Bilinear resampling, antialiased when shrinking (the triangle filter widened by the
    /// scale, as PIL and torchvision do), separable, rounded back to 8 bits at the end.
    package static func resize(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        let horizontal = weights(input: image.width, output: width)
        let vertical = weights(input: image.height, output: height)
        var intermediate = [Float](repeating: 0, count: image.height * width * 3)
        for y in 0..<image.height {
            for x in 0..<width {
                let (first, taps) = horizontal[x]
                var r: Float = 0, g: Float = 0, b: Float = 0
                for (index, weight) in taps.enumerated() {
                    let source = (y * image.width + first + index) * 3
                    r += weight * Float(image.pixels[source])
                    g += weight * Float(image.pixels[source + 1])
                    b += weight * Float(image.pixels[source + 2])
                }
                let destination = (y * width + x) * 3
                intermediate[destination] = r
                intermediate[destination + 1] = g
                intermediate[destination + 2] = b
            }
        }
        var pixels = [UInt8](repeating: 0, count: height * width * 3)
        for y in 0..<height {
            let (first, taps) = vertical[y]
            for x in 0..<width {
                for c in 0..<3 {
                    var value: Float = 0
                    for (index, weight) in taps.enumerated() {
                        value += weight * intermediate[((first + index) * width + x) * 3 + c]
                    }
                    pixels[(y * width + x) * 3 + c] = UInt8(max(0, min(255, value.rounded())))
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// For each output index: the first input index and the normalised filter weights.
    static func weights(input: Int, output: Int) -> [(Int, [Float])] {
        let scale = Double(input) / Double(output)
        let support = max(scale, 1)  // filter radius in input pixels (1 for the bilinear triangle)
        return (0..<output).map { index in
            let center = (Double(index) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)
            let last = min(Int(center + support + 0.5), input)
            var taps: [Double] = []
            for j in first..<max(first + 1, last) {
                let distance = abs((Double(j) - center + 0.5) / support)
                taps.append(max(0, 1 - distance))
            }
            let total = taps.reduce(0, +)
            return (first, taps.map { Float(total > 0 ? $0 / total : 0) })
        }
    }
}

import CPNG
import CTurboJPEG
import Foundation

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B`.
package struct RGBImage: Sendable, Equatable {
    package var width: Int
    package var height: Int
    package var pixels: [UInt8]

    package init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    package subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let index = (y * width + x) * 3
        return (pixels[index], pixels[index + 1], pixels[index + 2])
    }
}

public enum ImageError: Error, Equatable, Sendable, CustomStringConvertible {
    case unsupportedType(String)
    case tooLarge(String)
    case corrupt(String)

    public var description: String {
        switch self {
        case .unsupportedType(let detected): "unsupported image type: \(detected) (supported: JPEG, PNG)"
        case .tooLarge(let why): "image too large: \(why)"
        case .corrupt(let why): "invalid image: \(why)"
        }
    }
}

/// Decodes JPEG (libjpeg-turbo) and PNG (libpng) into RGB, within limits: a decompression bomb
/// is refused from its header, before any pixel memory is allocated.
public struct ImageDecoder: Sendable {
    package var maxEncodedBytes: Int
    public var maxPixels: Int

    public init(maxEncodedBytes: Int = 20 << 20, maxPixels: Int = 40_000_000) {
        self.maxEncodedBytes = maxEncodedBytes
        self.maxPixels = maxPixels
    }

    /// What the first bytes say the data is.
    package static func detect(_ data: [UInt8]) -> String {
        func starts(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
            data.count >= offset + prefix.count && Array(data[offset..<(offset + prefix.count)]) == prefix
        }
        if starts([0xFF, 0xD8, 0xFF]) { return "jpeg" }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "png" }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return "gif" }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return "webp" }
        if starts(Array("BM".utf8)) { return "bmp" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "tiff" }
        if starts(Array("ftyp".utf8), at: 4) {
            let brand = data.count >= 12 ? String(decoding: data[8..<12], as: UTF8.self) : ""
            return ["heic", "heix", "mif1", "msf1"].contains(brand) ? "heic" : (brand.hasPrefix("avi") ? "avif" : "isobmff (\(brand))")
        }
        if starts([0x00, 0x00, 0x01, 0x00]) { return "ico" }
        if starts(Array("%PDF".utf8)) { return "pdf" }
        if starts(Array("<svg".utf8)) || starts(Array("<?xml".utf8)) { return "svg/xml" }
        if data.isEmpty { return "empty data" }
        return "unknown data"
    }

    /// Width and height from the header alone (no pixel is decoded), for limits checked
    /// before any decoding work: JPEG's frame header, PNG's IHDR chunk.
    public func dimensions(_ data: [UInt8]) throws -> (width: Int, height: Int) {
        guard data.count <= maxEncodedBytes else {
            throw ImageError.tooLarge("\(data.count) bytes encoded, the limit is \(maxEncodedBytes)")
        }
        switch Self.detect(data) {
        case "jpeg":
            guard let handle = tjInitDecompress() else { throw ImageError.corrupt("cannot initialise the JPEG decoder") }
            defer { tjDestroy(handle) }
            var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            let header = data.withUnsafeBufferPointer {
                tjDecompressHeader3(handle, $0.baseAddress, UInt(data.count), &width, &height, &subsampling, &colorspace)
            }
            guard header == 0, width > 0, height > 0 else { throw ImageError.corrupt("JPEG header: \(Self.message(handle))") }
            return (Int(width), Int(height))
        case "png":
            // Signature (8), IHDR length (4) and type (4), then big-endian width and height.
            guard data.count >= 24, Array(data[12..<16]) == Array("IHDR".utf8) else { throw ImageError.corrupt("PNG: no IHDR chunk") }
            func u32(_ at: Int) -> Int { data[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
            let (width, height) = (u32(16), u32(20))
            guard width > 0, height > 0 else { throw ImageError.corrupt("PNG has no pixels") }
            return (width, height)
        case let other: throw ImageError.unsupportedType(other)
        }
    }

    package func decode(_ data: [UInt8]) throws -> RGBImage {
        guard data.count <= maxEncodedBytes else {
            throw ImageError.tooLarge("\(data.count) bytes encoded, the limit is \(maxEncodedBytes)")
        }
        switch Self.detect(data) {
        case "jpeg": return try decodeJPEG(data)
        case "png": return try decodePNG(data)
        case let other: throw ImageError.unsupportedType(other)
        }
    }

    // MARK: JPEG

    func decodeJPEG(_ data: [UInt8]) throws -> RGBImage {
        guard let handle = tjInitDecompress() else { throw ImageError.corrupt("cannot initialise the JPEG decoder") }
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let header = data.withUnsafeBufferPointer {
            tjDecompressHeader3(handle, $0.baseAddress, UInt(data.count), &width, &height, &subsampling, &colorspace)
        }
        guard header == 0 else { throw ImageError.corrupt("JPEG header: \(Self.message(handle))") }
        guard width > 0, height > 0 else { throw ImageError.corrupt("JPEG has no pixels") }
        if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
            throw ImageError.unsupportedType("CMYK JPEG")
        }
        guard Int(width) * Int(height) <= maxPixels else {
            throw ImageError.tooLarge("\(width)x\(height) pixels, the limit is \(maxPixels)")
        }
        var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
        let status = data.withUnsafeBufferPointer { source in
            pixels.withUnsafeMutableBufferPointer { output in
                tjDecompress2(
                    handle, source.baseAddress, UInt(data.count), output.baseAddress, width, 0, height,
                    Int32(TJPF_RGB.rawValue), TJFLAG_STOPONWARNING)
            }
        }
        // A truncated or damaged file ends in a warning ("premature end of data"): refused.
        guard status == 0 else { throw ImageError.corrupt("JPEG data: \(Self.message(handle))") }
        let image = RGBImage(width: Int(width), height: Int(height), pixels: pixels)
        return Self.orient(image, EXIF.orientation(in: data))
    }

    static func message(_ handle: tjhandle) -> String {
        guard let text = tjGetErrorStr2(handle) else { return "unknown error" }
        return String(cString: text)
    }

    /// Applies an EXIF orientation (1...8) so the pixels read the way the camera meant.
    static func orient(_ image: RGBImage, _ orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation) else { return image }
        let swaps = orientation >= 5
        let width = swaps ? image.height : image.width
        let height = swaps ? image.width : image.height
        var pixels = [UInt8](repeating: 0, count: image.pixels.count)
        for y in 0..<height {
            for x in 0..<width {
                // Source coordinates for destination (x, y), per the EXIF definitions.
                let (sx, sy): (Int, Int)
                switch orientation {
                case 2: (sx, sy) = (image.width - 1 - x, y)
                case 3: (sx, sy) = (image.width - 1 - x, image.height - 1 - y)
                case 4: (sx, sy) = (x, image.height - 1 - y)
                case 5: (sx, sy) = (y, x)
                case 6: (sx, sy) = (y, image.height - 1 - x)
                case 7: (sx, sy) = (image.width - 1 - y, image.height - 1 - x)
                default: (sx, sy) = (image.width - 1 - y, x)  // 8
                }
                let source = (sy * image.width + sx) * 3
                let destination = (y * width + x) * 3
                pixels[destination] = image.pixels[source]
                pixels[destination + 1] = image.pixels[source + 1]
                pixels[destination + 2] = image.pixels[source + 2]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    // MARK: PNG

    func decodePNG(_ data: [UInt8]) throws -> RGBImage {
        var result = data.withUnsafeBufferPointer { modelgate_png_decode($0.baseAddress, data.count, UInt64(maxPixels)) }
        guard let raw = result.pixels else {
            let message = withUnsafeBytes(of: &result.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if message.contains("exceeds the limit") { throw ImageError.tooLarge(message) }
            throw ImageError.corrupt("PNG: \(message)")
        }
        defer { free(raw) }
        let width = Int(result.width), height = Int(result.height), channels = Int(result.channels)
        let bytesPerSample = result.depth == 16 ? 2 : 1
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for index in 0..<(width * height) {
            let base = index * channels * bytesPerSample
            // 16-bit samples are little-endian here: keep the high byte.
            func sample(_ channel: Int) -> UInt8 { raw[base + channel * bytesPerSample + bytesPerSample - 1] }
            if channels >= 3 {
                pixels[index * 3] = sample(0)
                pixels[index * 3 + 1] = sample(1)
                pixels[index * 3 + 2] = sample(2)
            } else {
                let gray = sample(0)
                pixels[index * 3] = gray
                pixels[index * 3 + 1] = gray
                pixels[index * 3 + 2] = gray
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}

/// The orientation tag (0x0112) of a JPEG's EXIF block, 1 when absent or unreadable.
enum EXIF {
    static func orientation(in data: [UInt8]) -> Int {
        var offset = 2
        while offset + 4 <= data.count, data[offset] == 0xFF {
            let marker = data[offset + 1]
            if marker == 0xDA || marker == 0xD9 { break }  // start of scan / end of image
            let length = Int(data[offset + 2]) << 8 | Int(data[offset + 3])
            guard length >= 2, offset + 2 + length <= data.count else { break }
            if marker == 0xE1, length >= 16, Array(data[(offset + 4)..<(offset + 10)]) == Array("Exif\0\0".utf8) {
                return tiffOrientation(Array(data[(offset + 10)..<(offset + 2 + length)])) ?? 1
            }
            offset += 2 + length
        }
        return 1
    }

    static func tiffOrientation(_ tiff: [UInt8]) -> Int? {
        guard tiff.count >= 8 else { return nil }
        let little = tiff[0] == 0x49
        func u16(_ at: Int) -> Int? {
            guard at + 2 <= tiff.count else { return nil }
            return little ? Int(tiff[at]) | Int(tiff[at + 1]) << 8 : Int(tiff[at]) << 8 | Int(tiff[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard at + 4 <= tiff.count, let high = u16(little ? at + 2 : at), let low = u16(little ? at : at + 2) else { return nil }
            return high << 16 | low
        }
        guard let ifd = u32(4), let entries = u16(ifd) else { return nil }
        for entry in 0..<min(entries, 512) {
            let at = ifd + 2 + entry * 12
            guard let tag = u16(at) else { return nil }
            if tag == 0x0112, let value = u16(at + 8) { return value }
        }
        return nil
    }
}

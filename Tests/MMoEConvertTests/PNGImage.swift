import Foundation
@testable import MMoEImport

/// An 8-bit RGB or RGBA, non-interlaced PNG decoded to RGBA pixels: enough to compare what
/// rsvg-convert draws with a reference image.
struct PNGImage {
    let width: Int
    let height: Int
    /// RGBA, row-major.
    let pixels: [UInt8]

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count > 8, bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw Failure(description: "\(path): not a PNG")
        }
        func u32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        var at = 8
        var width = 0
        var height = 0
        var channels = 0
        var compressed: [UInt8] = []
        while at + 8 <= bytes.count {
            let length = u32(at)
            let type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            guard at + 12 + length <= bytes.count else { throw Failure(description: "\(path): chunk \(type) runs past the end") }
            let body = Array(bytes[at + 8..<at + 8 + length])
            switch type {
            case "IHDR":
                width = body[0..<4].reduce(0) { $0 << 8 | Int($1) }
                height = body[4..<8].reduce(0) { $0 << 8 | Int($1) }
                guard body[8] == 8, body[12] == 0, body[9] == 2 || body[9] == 6 else {
                    throw Failure(description: "\(path): only 8-bit RGB/RGBA, non-interlaced")
                }
                channels = body[9] == 6 ? 4 : 3
            case "IDAT": compressed += body
            default: break
            }
            at += 12 + length
        }
        guard width > 0, height > 0, width * height < 1 << 26, compressed.count > 6 else { throw Failure(description: "\(path): no image") }
        let stride = width * channels
        // zlib stream: a 2-byte header, then raw deflate.
        let raw = try compressed.dropFirst(2).withUnsafeBytes { source in
            try ZipArchive.inflate(source, expected: height * (stride + 1), path: path, member: "IDAT")
        }
        var rows = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for x in 0..<stride {
                let value = Int(raw[y * (stride + 1) + 1 + x])
                let a = x >= channels ? Int(rows[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(rows[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(rows[(y - 1) * stride + x - channels]) : 0
                let predicted: Int
                switch filter {
                case 0: predicted = 0
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predicted = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw Failure(description: "\(path): filter \(filter) on row \(y)")
                }
                rows[y * stride + x] = UInt8((value + predicted) & 0xFF)
            }
        }
        var rgba = [UInt8](repeating: 255, count: width * height * 4)
        for i in 0..<width * height {
            for k in 0..<channels { rgba[i * 4 + k] = rows[i * channels + k] }
        }
        self.width = width
        self.height = height
        pixels = rgba
    }

    /// The pixel at (x, y), composited over white.
    func rgb(_ x: Int, _ y: Int) -> (Int, Int, Int) {
        let i = (y * width + x) * 4
        let alpha = Int(pixels[i + 3])
        func over(_ v: UInt8) -> Int { (Int(v) * alpha + 255 * (255 - alpha)) / 255 }
        return (over(pixels[i]), over(pixels[i + 1]), over(pixels[i + 2]))
    }
}

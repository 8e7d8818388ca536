/// Random identifiers and secrets.
public enum Identifiers {
    private static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    /// `count` random bytes from the system's CSPRNG (getrandom on Linux).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { buf in
            var offset = 0
            while offset < count {
                var word = generator.next()
                let n = Swift.min(8, count - offset)
                withUnsafeBytes(of: &word) { buf.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
        return out
    }

    /// A random lowercase base-36 string of `length` characters (≈ 5.17 bits each).
    public static func random(length: Int) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(length)
        while out.count < length {
            for b in randomBytes(length * 2) where out.count < length && b < 252 {
                // 252 = 7 * 36: rejecting the rest keeps the distribution uniform.
                out.append(alphabet[Int(b) % 36])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// True for names safe to use as one path component: 1-128 ASCII
    /// letters, digits, '_' and '-'.
    public static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 128
            && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 95 || $0 == 45 }
    }

    /// An id with a type prefix, e.g. `sbx_8h2k...`.
    public static func make(prefix: String, length: Int = 16) -> String {
        "\(prefix)_\(random(length: length))"
    }
}

/// Hex encoding of bytes.
public func hexString<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}

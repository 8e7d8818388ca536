import Glibc

/// Addresses as bytes, for certificates and for telling loopback apart.
public enum IPAddressBytes {
    public static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        if inet_pton(AF_INET6, bare, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// 127.0.0.0/8, ::1 or `localhost`: traffic that never leaves the machine.
    public static func isLoopback(_ host: String) -> Bool {
        if host.lowercased() == "localhost" || host.lowercased().hasSuffix(".localhost") { return true }
        guard let bytes = parse(host) else { return false }
        if bytes.count == 4 { return bytes[0] == 127 }
        return bytes == [UInt8](repeating: 0, count: 15) + [1]
    }
}

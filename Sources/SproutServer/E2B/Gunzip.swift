import CZlib
import SproutCore

/// Decodes a gzip request body as it arrives (`Content-Encoding: gzip`
/// uploads), with a limit on what it may expand to.
final class Gunzip {
    private let state: OpaquePointer
    private var produced: Int64 = 0
    let limit: Int64

    init(limit: Int64) throws {
        guard let state = czlib_gunzip_new() else { throw SproutError(.internal, "cannot start a gzip decoder") }
        self.state = state
        self.limit = limit
    }

    deinit { czlib_gunzip_free(state) }

    var ended: Bool { czlib_gunzip_ended(state) != 0 }

    /// The bytes `input` decodes to.
    func decode(_ input: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var consumed = 0
            let n = input.withUnsafeBufferPointer { inp in
                buffer.withUnsafeMutableBufferPointer { outp in
                    czlib_gunzip_update(state, inp.baseAddress.map { $0 + offset }, inp.count - offset, &consumed, outp.baseAddress, outp.count)
                }
            }
            guard n >= 0 else { throw SproutError(.invalidArgument, "the upload is not valid gzip") }
            offset += consumed
            out += buffer[0..<n]
            produced += Int64(n)
            guard produced <= limit else { throw SproutError(.tooLarge, "the upload decompresses to more than \(limit) bytes") }
            // A full buffer may leave output behind; otherwise stop once the input is used up.
            if n == buffer.count { continue }
            if offset >= input.count || (n == 0 && consumed == 0) || ended { break }
        }
        guard !ended || offset >= input.count else { throw SproutError(.invalidArgument, "data after the end of the gzip stream") }
        return out
    }
}

/// A streaming gzip encoder, for downloads the client asked to be compressed.
final class Gzip {
    private let state: OpaquePointer

    init(level: Int32 = 1) throws {
        guard let state = czlib_gzip_new(level) else { throw SproutError(.internal, "cannot start a gzip encoder") }
        self.state = state
    }

    deinit { czlib_gzip_free(state) }

    /// What `input` encodes to so far; with `finish`, the rest and the trailer.
    func encode(_ input: [UInt8], finish: Bool = false) throws -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var consumed = 0
            let n = input.withUnsafeBufferPointer { inp in
                buffer.withUnsafeMutableBufferPointer { outp in
                    czlib_gzip_update(state, inp.baseAddress.map { $0 + offset }, inp.count - offset, finish ? 1 : 0, &consumed, outp.baseAddress, outp.count)
                }
            }
            guard n >= 0 else { throw SproutError(.internal, "gzip encoding failed") }
            offset += consumed
            out += buffer[0..<n]
            if n == buffer.count { continue }
            if offset >= input.count { break }
        }
        return out
    }
}

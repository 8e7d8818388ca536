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
        var failed = false
        var tooLarge = false
        let (out, offset) = Zlib.drain(input) { inp, outp, consumed in
            let n = czlib_gunzip_update(state, inp.baseAddress, inp.count, &consumed, outp.baseAddress, outp.count)
            if n < 0 { failed = true; return nil }
            produced += Int64(n)
            if produced > limit { tooLarge = true; return nil }
            return n
        } stop: { n, _, consumed in n == 0 && consumed == 0 || ended }
        if failed { throw SproutError(.invalidArgument, "the upload is not valid gzip") }
        if tooLarge { throw SproutError(.tooLarge, "the upload decompresses to more than \(limit) bytes") }
        guard !ended || offset >= input.count else { throw SproutError(.invalidArgument, "data after the end of the gzip stream") }
        return out
    }
}

/// The loop both directions share: feed `input` to `step` and collect its
/// output a buffer at a time, until the input is used up (and a buffer
/// comes back less than full) or `stop` says the stream is done.
enum Zlib {
    static func drain(
        _ input: [UInt8], step: (UnsafeBufferPointer<UInt8>, UnsafeMutableBufferPointer<UInt8>, inout Int) -> Int?,
        stop: (Int, Int, Int) -> Bool = { _, _, _ in false }
    ) -> (output: [UInt8], consumed: Int) {
        var out: [UInt8] = []
        var offset = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var consumed = 0
            let produced = input.withUnsafeBufferPointer { inp in
                buffer.withUnsafeMutableBufferPointer { outp in
                    step(UnsafeBufferPointer(rebasing: inp[offset...]), outp, &consumed)
                }
            }
            guard let n = produced else { break }
            offset += consumed
            out += buffer[0..<n]
            // A full buffer may leave output behind; otherwise stop once the input is used up.
            if n == buffer.count { continue }
            if offset >= input.count || stop(n, offset, consumed) { break }
        }
        return (out, offset)
    }
}

final class Gzip {
    private let state: OpaquePointer

    init(level: Int32 = 1) throws {
        guard let state = czlib_gzip_new(level) else { throw SproutError(.internal, "cannot start a gzip encoder") }
        self.state = state
    }

    deinit { czlib_gzip_free(state) }

    /// What `input` encodes to so far; with `finish`, the rest and the trailer.
    func encode(_ input: [UInt8], finish: Bool = false) throws -> [UInt8] {
        var failed = false
        let (out, _) = Zlib.drain(input) { inp, outp, consumed in
            let n = czlib_gzip_update(state, inp.baseAddress, inp.count, finish ? 1 : 0, &consumed, outp.baseAddress, outp.count)
            if n < 0 { failed = true; return nil }
            return n
        }
        if failed { throw SproutError(.internal, "gzip encoding failed") }
        return out
    }
}

import CompressNIO
import NIOCore
import SproutCore

/// Decodes a gzip request body as it arrives (`Content-Encoding: gzip`
/// uploads), with a limit on what it may expand to; zlib through compress-nio.
final class Gunzip {
    private let zlib: ZlibDecompressor
    private var produced: Int64 = 0
    private(set) var ended = false
    let limit: Int64

    init(limit: Int64) throws {
        zlib = try ZlibDecompressor(algorithm: .gzip)
        self.limit = limit
    }

    /// The bytes `input` decodes to.
    func decode(_ input: [UInt8]) throws -> [UInt8] {
        var from = ByteBuffer(bytes: input)
        var out: [UInt8] = []
        var window = ByteBufferAllocator().buffer(capacity: 1 << 16)
        while from.readableBytes > 0 && !ended {
            window.clear()
            do {
                try zlib.inflate(from: &from, to: &window)
                // Back without an error and with input left: the stream ended inside it.
                if from.readableBytes > 0 { ended = true }
            } catch let error as CompressNIOError where error == .bufferOverflow || error == .inputBufferOverflow {
                // The window is full (more to come) or the input is used up.
            } catch {
                throw SproutError(.invalidArgument, "the upload is not valid gzip")
            }
            try take(&window, into: &out)
        }
        guard from.readableBytes == 0 else { throw SproutError(.invalidArgument, "data after the end of the gzip stream") }
        return out
    }

    /// Whether the stream's end (its trailer, checked) has been read: zlib
    /// answers an empty input with the end again once it is there, and
    /// asks for more input before.
    func finished() throws -> Bool {
        if ended { return true }
        var empty = ByteBufferAllocator().buffer(capacity: 16)
        var window = ByteBufferAllocator().buffer(capacity: 1 << 10)
        do {
            try zlib.inflate(from: &empty, to: &window)
            ended = window.readableBytes == 0
        } catch let error as CompressNIOError where error == .inputBufferOverflow || error == .bufferOverflow {
            return false
        } catch {
            throw SproutError(.invalidArgument, "the upload is not valid gzip")
        }
        return ended
    }

    private func take(_ window: inout ByteBuffer, into out: inout [UInt8]) throws {
        produced += Int64(window.readableBytes)
        if produced > limit { throw SproutError(.tooLarge, "the upload decompresses to more than \(limit) bytes") }
        out += window.readableBytesView
    }
}

/// Encodes a response body as gzip as it is sent (`Accept-Encoding: gzip`
/// downloads), at zlib's fastest level.
final class Gzip {
    private let zlib: ZlibCompressor

    init() throws {
        zlib = try ZlibCompressor(algorithm: .gzip, configuration: .init(compressionLevel: .fastestCompression))
    }

    /// What `input` encodes to so far; with `finish`, the rest and the trailer.
    func encode(_ input: [UInt8], finish: Bool = false) throws -> [UInt8] {
        var from = ByteBuffer(bytes: input)
        var out: [UInt8] = []
        var window = ByteBufferAllocator().buffer(capacity: max(1 << 16, zlib.maxSize(from: from)))
        while true {
            window.clear()
            do {
                try zlib.deflate(from: &from, to: &window, flush: finish ? .finish : .no)
                out += window.readableBytesView
                if from.readableBytes == 0 { return out }
            } catch let error as CompressNIOError where error == .bufferOverflow {
                out += window.readableBytesView
            }
        }
    }
}

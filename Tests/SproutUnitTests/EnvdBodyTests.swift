import Foundation
import Testing
@testable import SproutServer

/// The gzip of E2B's compressed uploads and downloads, checked against the
/// system's `gzip` so that both sides are not only ours.
@Suite struct GzipTests {
    private func systemGzip(_ data: [UInt8], arguments: [String] = ["-c"]) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = arguments
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let writer = Thread { input.fileHandleForWriting.write(Data(data)); try? input.fileHandleForWriting.close() }
        writer.start()
        let result = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return [UInt8](result)
    }

    private var sample: [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<50_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return random + [UInt8](repeating: 7, count: 300_000) + Array("sprout".utf8)
    }

    @Test func decodesWhatGzipWroteInAnyChunking() throws {
        let plain = sample
        let packed = try systemGzip(plain)
        for size in [1, 7, 4096, packed.count] {
            let gunzip = try Gunzip(limit: 1 << 30)
            var out: [UInt8] = []
            var at = 0
            while at < packed.count {
                #expect(try !gunzip.finished())
                let end = min(at + size, packed.count)
                out += try gunzip.decode(Array(packed[at..<end]))
                at = end
            }
            #expect(try gunzip.finished())
            #expect(out == plain)
        }
    }

    @Test func truncatedIsUnfinishedAndTrailingOrDamagedDataIsAnError() throws {
        let packed = try systemGzip(sample)
        let short = try Gunzip(limit: 1 << 30)
        _ = try short.decode(Array(packed.dropLast(4)))
        #expect(try !short.finished())

        let trailing = try Gunzip(limit: 1 << 30)
        #expect(throws: (any Error).self) { try trailing.decode(packed + [1, 2, 3]) }

        var damaged = packed
        damaged[damaged.count - 6] ^= 0xFF // the CRC
        let check = try Gunzip(limit: 1 << 30)
        #expect(throws: (any Error).self) {
            _ = try check.decode(damaged)
            _ = try check.finished()
        }
        #expect(throws: (any Error).self) { try Gunzip(limit: 1 << 30).decode(Array("not gzip at all".utf8)) }
    }

    @Test func refusesToExpandPastItsLimit() throws {
        let packed = try systemGzip([UInt8](repeating: 0, count: 1 << 20))
        #expect(throws: (any Error).self) { try Gunzip(limit: 1000).decode(packed) }
        #expect(try Gunzip(limit: 1 << 20).decode(packed).count == 1 << 20)
    }

    @Test func encodesWhatGzipReads() throws {
        let plain = sample
        let gzip = try Gzip()
        var packed: [UInt8] = []
        for start in stride(from: 0, to: plain.count, by: 65_536) {
            packed += try gzip.encode(Array(plain[start..<min(start + 65_536, plain.count)]))
        }
        packed += try gzip.encode([], finish: true)
        #expect(packed.count < plain.count)
        #expect(try systemGzip(packed, arguments: ["-dc"]) == plain)
    }
}

/// E2B's multipart uploads, as httpx (the Python SDK's client) writes them.
@Suite struct MultipartTests {
    static let body = Array((
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + "first\r\nwith a line\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n\r\n"
        + "\r\n--b0undary--\r\n").utf8)

    @Test func partsWithTheirNamesAndFilenames() throws {
        let parts = try Multipart.parse(Self.body, contentType: "multipart/form-data; boundary=\"b0undary\"")
        #expect(parts.map(\.name) == ["file", "file"])
        #expect(parts.map(\.filename) == ["/tmp/a.txt", "b.bin"])
        #expect(parts.map { String(decoding: $0.body, as: UTF8.self) } == ["first\r\nwith a line", ""])
    }

    @Test func badBodiesAreInvalidArguments() {
        #expect(throws: (any Error).self) { try Multipart.parse(Self.body, contentType: "multipart/form-data") }
        #expect(throws: (any Error).self) { try Multipart.parse(Array("no parts here".utf8), contentType: "multipart/form-data; boundary=x") }
        #expect(throws: (any Error).self) { try Multipart.parse(Array(Self.body.prefix(60)), contentType: "multipart/form-data; boundary=b0undary") }
    }
}

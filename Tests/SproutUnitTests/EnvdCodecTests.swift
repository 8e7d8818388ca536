import EnvdProto
import Foundation
import Testing
import SproutAgentProtocol
@testable import SproutServer

/// envd's messages in Connect's codecs: protobuf's JSON mapping as connect-go
/// writes and reads it (lowerCamelCase names, enums by name or number, 64-bit
/// integers as strings, zero values left out, unknown fields skipped), and
/// the binary one.
@Suite struct EnvdCodecTests {
    let json = ConnectRPC.Codec.json

    @Test func requestsDecodeAsTheSDKWritesThem() throws {
        let start = try json.decode(Process_StartRequest.self, Data("""
            {"process":{"cmd":"/bin/bash","args":["-l","-c","ls"],"envs":{"A":"1"},"cwd":"/tmp"},
             "pty":{"size":{"cols":100}},"tag":"t","futureField":{"x":1}}
            """.utf8))
        #expect(start.process.cmd == "/bin/bash" && start.process.args == ["-l", "-c", "ls"] && start.process.envs == ["A": "1"])
        #expect(start.process.hasCwd && start.hasPty && start.hasTag && !start.hasStdin)
        #expect(EnvdProcess.size(start.pty) == (100, 24))

        for signal in ["\"SIGNAL_SIGKILL\"", "9"] {
            let request = try json.decode(Process_SendSignalRequest.self, Data("{\"process\":{\"pid\":7},\"signal\":\(signal)}".utf8))
            #expect(request.signal == .sigkill && request.process.selector == .pid(7))
        }
        // An empty body is the empty message.
        #expect(try json.decode(Process_ListRequest.self, Data()) == Process_ListRequest())
    }

    @Test func answersUseProtobufsJSONMapping() throws {
        var entry = Filesystem_EntryInfo()
        entry.name = "a"
        entry.type = .file
        entry.size = 5
        entry.modifiedTime = .init(timeIntervalSince1970: 1_800_000_000.5)
        let object = try #require(try JSONSerialization.jsonObject(with: json.encode(entry)) as? [String: Any])
        #expect(object["size"] as? String == "5" && object["type"] as? String == "FILE_TYPE_FILE")
        #expect(object["modifiedTime"] as? String == "2027-01-15T08:00:00.500Z")
        #expect(object["isSymlink"] == nil && object["metadata"] == nil && object["mode"] == nil)

        let end = EnvdProcess.end(ProcessExit(code: 3, signal: nil))
        let text = String(decoding: try json.encode(end), as: UTF8.self)
        #expect(text == #"{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}}"#)
    }

    @Test func binaryRoundTripsAndBadInputIsInvalidArgument() throws {
        let data = EnvdProcess.data(.stdout(Data("hi".utf8)))
        let back = try ConnectRPC.Codec.proto.decode(Process_StartResponse.self, ConnectRPC.Codec.proto.encode(data))
        #expect(back == data)
        for (codec, bytes) in [(json, Data("{not json".utf8)), (.proto, Data([0xFF, 0xFF]))] as [(ConnectRPC.Codec, Data)] {
            do {
                _ = try codec.decode(Filesystem_StatRequest.self, bytes)
                Issue.record("decoded \(bytes)")
            } catch {
                #expect(ConnectRPC.Failure(error).code == .invalid_argument)
            }
        }
    }
}

import Foundation
import SproutCore
import SproutS3
import Testing

/// SigV4 against AWS's published examples, store addresses and credential
/// files (the client itself runs against a real S3 server in the
/// integration tier).
@Suite("Unit: S3")
struct S3Tests {
    /// AWS's example key pair of the S3 signing documentation.
    let signer = SigV4(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    let day = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z

    func signature(_ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)] = [], payload: String) -> (String, String) {
        let all = [("Host", "examplebucket.s3.amazonaws.com")] + headers
        let auth = signer.sign(method: method, path: path, query: query, headers: all, payloadHash: payload, date: day)
            .first { $0.0 == "Authorization" }!.1
        let signed = auth.split(separator: ",").first { $0.hasPrefix("SignedHeaders=") }!.dropFirst("SignedHeaders=".count)
        return (String(signed), String(auth.suffix(64)))
    }

    @Test("the signatures of AWS's S3 SigV4 examples: GET object with a range, PUT object, GET ?lifecycle, list with a query")
    func awsVectors() {
        #expect(SigV4.amzDate(day) == "20130524T000000Z")
        let get = signature("GET", "/test.txt", headers: [("Range", "bytes=0-9")], payload: SigV4.emptyPayloadHash)
        #expect(get == ("host;range;x-amz-content-sha256;x-amz-date", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))
        let body = SigV4.payloadHash(Array("Welcome to Amazon S3.".utf8))
        #expect(body == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let put = signature("PUT", "/" + percentEncode("test$file.text"),
                            headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")], payload: body)
        #expect(put == ("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class", "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
        #expect(signature("GET", "/", query: [("lifecycle", "")], payload: SigV4.emptyPayloadHash).1
            == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
        #expect(signature("GET", "/", query: [("prefix", "J"), ("max-keys", "2")], payload: SigV4.emptyPayloadHash).1
            == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test("keys with spaces, UTF-8 and +, and query values with / and =, signed as botocore signs them")
    func encodedKeys() {
        // Reference from botocore 1.x's S3SigV4Auth for the same request and time.
        let path = "/my-bucket/" + percentEncode("a b/été+x.bin")
        #expect(path == "/my-bucket/a%20b/%C3%A9t%C3%A9%2Bx.bin")
        let auth = signer.sign(method: "PUT", path: path, query: [("uploadId", "a/b="), ("partNumber", "2")], headers: [("host", "127.0.0.1:9000")],
                               payloadHash: SigV4.payloadHash(Array("hello".utf8)), date: day)
        #expect(auth.first { $0.0 == "Authorization" }!.1.hasSuffix("Signature=8cf69ffd188e63adccf2ed7e296d53a04c631093c8f04b56dfcacec4d51ced2d"))
    }

    @Test("store addresses: bucket, prefix, endpoint and region; bad ones refused with the form expected")
    func locations() throws {
        let full = try S3Location(parsing: "s3://sprout-envs/team/a?endpoint=http://127.0.0.1:9000&region=eu-west-1")
        #expect(full.bucket == "sprout-envs" && full.prefix == "team/a/" && full.endpoint.absoluteString == "http://127.0.0.1:9000" && full.region == "eu-west-1")
        let aws = try S3Location(parsing: "s3://my.bucket")
        #expect(aws.prefix == "" && aws.endpoint.absoluteString == "https://s3.us-east-1.amazonaws.com" && aws.region == "us-east-1")
        for bad in ["sprout-envs", "s3://", "s3://ab", "s3://Upper", "s3://b_c", "s3://bucket?endpoint=ftp://x", "s3://bucket?colour=red",
                    "s3://bucket?endpoint=http://host/path"] {
            #expect(throws: SproutError.self, "\(bad)") { try S3Location(parsing: bad) }
        }
    }

    @Test("credentials from the environment or an env file; missing ones named")
    func credentials() throws {
        let env = try S3Credentials.load(file: nil, environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"])
        #expect(env == S3Credentials(accessKey: "AK", secretKey: "SK"))
        let path = FileManager.default.temporaryDirectory.path + "/s3-creds-\(Identifiers.random(length: 6))"
        defer { unlink(path) }
        try "# store\nexport AWS_ACCESS_KEY_ID=file-key\nAWS_SECRET_ACCESS_KEY = \"file secret\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        // The file wins over the environment.
        #expect(try S3Credentials.load(file: path, environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"])
            == S3Credentials(accessKey: "file-key", secretKey: "file secret"))
        #expect(throws: SproutError.self) { try S3Credentials.load(file: nil, environment: ["AWS_ACCESS_KEY_ID": "AK"]) }
        #expect(throws: SproutError.self) { try S3Credentials.load(file: path + "-missing", environment: [:]) }
    }
}

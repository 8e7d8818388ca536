import Foundation

/// Any JSON value, passed through as it came (a list entry from a node).
indirect enum JSONValue: Codable, Sendable {
    case object([String: JSONValue]), array([JSONValue]), string(String), number(Double), bool(Bool), null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .object(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    subscript(_ key: String) -> JSONValue? { if case .object(let object) = self { object[key] } else { nil } }

    var text: String {
        switch self {
        case .string(let value): value
        case .number(let value): String(value)
        default: ""
        }
    }

    var id: String { (self["id"] ?? self["sandboxID"] ?? self["volumeID"])?.text ?? "" }
    var sortKey: String { (self["createdAt"] ?? self["startedAt"])?.text ?? "" }
}

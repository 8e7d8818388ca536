import Foundation
import SproutSystem

/// Finding the statically linked agent binary.
enum AgentBinary {
    /// `explicit`, then `$SPROUT_AGENT`, then `.build-agent/release/sprout-agent`
    /// in a folder above the running executable (a source checkout), then
    /// `/usr/local/lib/sprout/sprout-agent`.
    static func locate(explicit: String?) -> String? {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["SPROUT_AGENT"] { return env }
        let built = ".build-agent/release/sprout-agent"
        if let checkout = OwnExecutable.folderAbove(holding: built, accept: OwnExecutable.isExecutable) { return checkout + "/" + built }
        let installed = "/usr/local/lib/sprout/sprout-agent"
        return OwnExecutable.isExecutable(installed) ? installed : nil
    }

    /// True if the ELF file has no program interpreter (PT_INTERP): it needs
    /// no loader or shared libraries from the sandbox's root.
    static func isStatic(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let header = try? handle.read(upToCount: 64), header.count == 64,
            header.starts(with: [0x7F, 0x45, 0x4C, 0x46]), header[4] == 2  // ELF64
        else { return false }
        func u16(_ d: Data, _ o: Int) -> Int { Int(d[d.startIndex + o]) | Int(d[d.startIndex + o + 1]) << 8 }
        func u64(_ d: Data, _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(d[d.startIndex + o + $1]) << (8 * UInt64($1)) } }
        let phoff = u64(header, 32)
        let phentsize = u16(header, 54)
        let phnum = u16(header, 56)
        guard (try? handle.seek(toOffset: phoff)) != nil, let table = try? handle.read(upToCount: phentsize * phnum) else { return false }
        for i in 0..<phnum {
            let type = Int(table[table.startIndex + i * phentsize]) | Int(table[table.startIndex + i * phentsize + 1]) << 8
            if type == 3 { return false }  // PT_INTERP
        }
        return true
    }
}

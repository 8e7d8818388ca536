import Glibc
import SproutHost
import SproutRuntime

extension BenchCommand {
    /// The machine a report was measured on.
    static func machine(_ kind: RuntimeKind, platform: String?) async -> BenchReport.Machine {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let version = (try? await HostCommand.capture([kind.binary, "--version"]))?.stdout.split(separator: "\n").first.map(String.init) ?? "?"
        return BenchReport.Machine(
            cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            memoryGiB: Double(sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))) / Double(1 << 30),
            kernel: release, runtime: kind.rawValue, runtimeVersion: version, platform: platform)
    }
}

import Foundation
import Glibc
import SproutCore
import SproutSystem

/// A host directory bound into a container.
public struct BindMount: Sendable, Equatable {
    public var source: String
    public var destination: String
    public var readOnly: Bool
    public init(source: String, destination: String, readOnly: Bool) {
        self.source = source
        self.destination = destination
        self.readOnly = readOnly
    }
}

/// What a sandbox's container is made of.
public struct ContainerSpec: Sendable {
    public var id: String
    public var hostname: String
    public var rootfs: String
    public var networkNamespace: String
    public var args: [String]
    public var env: [String]
    public var cpus: Double
    public var memoryMB: Int
    public var pidsLimit: Int
    /// Bind mounts of host directories (keep them few: each costs runsc ~6 ms at start).
    public var mounts: [BindMount]
    public var cgroupsPath: String

    public init(
        id: String, hostname: String, rootfs: String, networkNamespace: String, args: [String], env: [String],
        cpus: Double, memoryMB: Int, pidsLimit: Int, mounts: [BindMount], cgroupsPath: String
    ) {
        self.id = id
        self.hostname = hostname
        self.rootfs = rootfs
        self.networkNamespace = networkNamespace
        self.args = args
        self.env = env
        self.cpus = cpus
        self.memoryMB = memoryMB
        self.pidsLimit = pidsLimit
        self.mounts = mounts
        self.cgroupsPath = cgroupsPath
    }
}

/// Writes the OCI runtime bundle (`config.json`) for a container.
enum OCIBundle {
    /// Docker's default set. Never CAP_SYS_TIME or CAP_NET_ADMIN: under runc they would reach the host.
    static let capabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]

    /// 65536 open files, or the host's own hard limit if lower (a container
    /// cannot be given more than its creator has).
    static var fileLimit: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(min(65536, limit.rlim_max))
    }

    static func config(_ spec: ContainerSpec) -> [String: Any] {
        var mounts: [[String: Any]] = [
            ["destination": "/proc", "type": "proc", "source": "proc"],
            ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]],
            ["destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]],
            ["destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]],
            ["destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]],
        ]
        for mount in spec.mounts {
            mounts.append(["destination": mount.destination, "type": "bind", "source": mount.source,
                           "options": ["rbind", mount.readOnly ? "ro" : "rw", "nosuid", "nodev"]])
        }
        let period = 100_000
        let resources: [String: Any] = [
            "memory": ["limit": spec.memoryMB << 20],
            "cpu": ["quota": Int(spec.cpus * Double(period)), "period": period],
            "pids": ["limit": spec.pidsLimit],
        ]
        return [
            "ociVersion": "1.0.2",
            "process": [
                "terminal": false,
                "user": ["uid": 0, "gid": 0],
                "args": spec.args,
                "env": spec.env,
                "cwd": "/",
                "capabilities": [
                    "bounding": capabilities, "effective": capabilities, "permitted": capabilities,
                ],
                "rlimits": [["type": "RLIMIT_NOFILE", "hard": fileLimit, "soft": fileLimit]],
                // Setuid programs work inside (sudo for the `base` user): the
                // sandbox's own root is what every caller of the API already gets,
                // so gaining it inside crosses no boundary; the capability set
                // above still bounds what that root holds.
                "noNewPrivileges": false,
            ],
            "root": ["path": spec.rootfs, "readonly": false],
            "hostname": spec.hostname,
            "mounts": mounts,
            "linux": [
                "namespaces": [
                    ["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"],
                    ["type": "network", "path": spec.networkNamespace],
                ],
                "resources": resources,
                "cgroupsPath": spec.cgroupsPath,
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            ],
        ]
    }

    static func write(_ spec: ContainerSpec, to bundle: String) throws {
        try FileSystem.makeDirectories(bundle)
        let data = try JSONSerialization.data(withJSONObject: config(spec), options: [.prettyPrinted, .sortedKeys])
        try FileSystem.writeAtomically(bundle + "/config.json", Array(data))
    }
}

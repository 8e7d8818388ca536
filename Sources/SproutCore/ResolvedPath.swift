/// `path` as a plain absolute path: relative paths start at `base` (itself
/// absolute), and `.` and `..` are resolved (`..` stops at the root).
public func resolvedPath(_ path: String, in base: String) -> String {
    let absolute = path.hasPrefix("/") ? path : (path.isEmpty ? base : base + "/" + path)
    var parts: [Substring] = []
    for part in absolute.split(separator: "/") where part != "." {
        if part == ".." { _ = parts.popLast() } else { parts.append(part) }
    }
    return "/" + parts.joined(separator: "/")
}

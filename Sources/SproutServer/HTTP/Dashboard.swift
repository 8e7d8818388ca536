import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutCore
import SproutSystem

/// Finding files Sprout ships beside its source (a checkout's `envs/`, `dashboard/`).
enum SourceTree {
    /// Folder `name` of Sprout's own files: `explicit`, then `$variable`, then
    /// `name/` in a folder above the running executable (a source checkout),
    /// then `/usr/local/share/sprout/name`; a found folder must hold `marker`.
    static func locate(_ name: String, explicit: String?, variable: String, marker: String) -> String? {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment[variable] { return env }
        if let found = OwnExecutable.folderAbove(holding: "\(name)/\(marker)") { return "\(found)/\(name)" }
        let installed = "/usr/local/share/sprout/\(name)"
        return FileSystem.exists("\(installed)/\(marker)") ? installed : nil
    }
}

/// The web dashboard: static files only, served at `/` beside the API (same
/// origin: no CORS). The page signs in with an API key it keeps in the tab's
/// session storage and calls `/v1` like any client; nothing here is
/// authenticated because nothing here is a secret. Its scripts and styles are
/// all served from here, from `dashboard/` of the source tree (or
/// `/usr/local/share/sprout/dashboard`), xterm.js too: `make dashboard`
/// bundles Debian's into `dashboard/vendor/`.
struct DashboardRoutes: Sendable {
    let directory: String?

    /// `explicit`, `$SPROUT_DASHBOARD`, `dashboard/` above the executable, the installed copy.
    static func locate(explicit: String?) -> String? {
        SourceTree.locate("dashboard", explicit: explicit, variable: "SPROUT_DASHBOARD", marker: "index.html")
    }

    static let types: [String: String] = [
        "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
        "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon", "json": "application/json",
    ]

    func register(on router: Router<SproutContext>) {
        router.get("/") { _, _ in try serve(directory, "index.html") }
        router.get("ui/**") { _, context in
            let path = context.parameters.getCatchAll().joined(separator: "/")
            if path.hasPrefix("vendor/"), let directory, !FileSystem.exists(directory + "/" + path) {
                throw SproutError(.notFound, "the dashboard's terminal is not built: make dashboard (esbuild bundles Debian's xterm.js)")
            }
            return try serve(directory, path)
        }
    }

    /// One file below `root`; anything that could leave it is not found.
    func serve(_ root: String?, _ path: String) throws -> Response {
        guard let root else {
            throw SproutError(.notFound, "the dashboard's files are not installed (dashboard/ of the source tree, or --dashboard DIR)")
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix(".") }) else {
            throw SproutError(.notFound, "no such file: /ui/\(path)")
        }
        let ext = parts.last.flatMap { $0.split(separator: ".").last }.map(String.init) ?? ""
        guard Self.types[ext] != nil, let bytes = try? Descriptor.readFile(root + "/" + path, limit: 8 << 20) else {
            throw SproutError(.notFound, "no such file: /ui/\(path)")
        }
        return try file(bytes, type: ext)
    }

    func file(_ bytes: [UInt8], type ext: String) throws -> Response {
        let type = Self.types[ext] ?? "application/octet-stream"
        var headers: HTTPFields = [
            .contentType: type, .cacheControl: "no-cache",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("X-Frame-Options")!: "DENY",
            HTTPField.Name("Referrer-Policy")!: "no-referrer",
        ]
        if ext == "html" {
            // Only Sprout's own scripts and connections; no inline script. Inline
            // styles are allowed: xterm.js's DOM renderer writes its own <style>.
            headers[HTTPField.Name("Content-Security-Policy")!] =
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

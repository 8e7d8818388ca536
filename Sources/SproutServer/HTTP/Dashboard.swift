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
        if let found = above(executableHas: "\(name)/\(marker)") { return "\(found)/\(name)" }
        let installed = "/usr/local/share/sprout/\(name)"
        return FileSystem.exists("\(installed)/\(marker)") ? installed : nil
    }

    /// The nearest folder above the running executable that holds `relative`.
    static func above(executableHas relative: String) -> String? {
        var dir = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
            dir = String(dir[..<slash])
            if FileSystem.exists(dir + "/" + relative) { return dir }
        }
        return nil
    }
}

/// The web dashboard: static files only, served at `/` beside the API (same
/// origin: no CORS). The page signs in with an API key it keeps in the tab's
/// session storage and calls `/v1` like any client; nothing here is
/// authenticated because nothing here is a secret. Its scripts and styles are
/// all served from here: the dashboard's own (`dashboard/` of the source tree,
/// or `/usr/local/share/sprout/dashboard`) and xterm.js from Debian's
/// packages, bundled by `XtermBundle`, at `/ui/vendor/xterm.js` and `.css`.
struct DashboardRoutes: Sendable {
    let directory: String?
    let xterm: XtermBundle

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
            switch path {
            case "vendor/xterm.js": return try file(xterm.script(), type: "js")
            case "vendor/xterm.css": return try file(xterm.stylesheet(), type: "css")
            default: return try serve(directory, path)
            }
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

/// xterm.js for the browser, from Debian's packages. Debian 12's
/// `libjs-xterm` ships an empty shell for `xterm.js` (its bundling step
/// produced a stub that `require`s the CommonJS files), so Sprout bundles
/// `node-xterm`'s CommonJS modules itself: each file becomes a function in
/// one script with a small `require` that resolves relative paths, plus
/// `libjs-xterm`'s fit add-on. Built once, on first request.
final class XtermBundle: Sendable {
    static let modules = "/usr/share/nodejs/xterm/lib"
    static let fitAddon = "/usr/share/javascript/xterm/addons/fit/fit.js"
    static let stylesheets = ["/usr/share/nodejs/xterm/lib/xterm.css", "/usr/share/javascript/xterm/xterm.css"]
    private let built = Locked<[UInt8]?>(nil)

    static let missing = "xterm.js is not installed (Debian packages node-xterm and libjs-xterm: scripts/install-deps.sh)"

    func script() throws -> [UInt8] {
        if let done = built.current { return done }
        let bundle = try Self.bundle()
        built.withLock { $0 = bundle }
        return bundle
    }

    func stylesheet() throws -> [UInt8] {
        for path in Self.stylesheets { if let bytes = try? Descriptor.readFile(path) { return bytes } }
        throw SproutError(.notFound, Self.missing)
    }

    static func bundle() throws -> [UInt8] {
        guard FileSystem.isDirectory(modules), FileSystem.exists(fitAddon) else { throw SproutError(.notFound, missing) }
        var sources: [(String, String)] = []
        let root = URL(fileURLWithPath: modules)
        let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)
        while let url = walker?.nextObject() as? URL {
            let path = url.path
            guard path.hasSuffix(".js"), !path.hasSuffix(".test.js"), let bytes = try? Descriptor.readFile(path) else { continue }
            let id = "lib/" + path.dropFirst(root.path.count + 1).dropLast(3)
            sources.append((id, String(decoding: bytes, as: UTF8.self)))
        }
        guard sources.contains(where: { $0.0 == "lib/public/Terminal" }) else { throw SproutError(.notFound, missing) }
        sources.append(("addons/fit/fit", String(decoding: try Descriptor.readFile(fitAddon), as: UTF8.self)))
        var out = "/* xterm.js \(modules) (MIT, from Debian's node-xterm), bundled by Sprout. */\n(function () {\n'use strict';\nvar defs = {}, cache = {};\n"
        for (id, source) in sources.sorted(by: { $0.0 < $1.0 }) {
            let body = source.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix("//# sourceMappingURL=") }.joined(separator: "\n")
            out += "defs[\(jsonString(id))] = function (require, module, exports) {\n\(body)\n};\n"
        }
        out += """
        function resolve(from, path) {
          if (path.charAt(0) !== '.') return path;
          var parts = from.split('/'); parts.pop();
          path.split('/').forEach(function (p) { if (p === '..') parts.pop(); else if (p !== '.') parts.push(p); });
          var id = parts.join('/').replace(/\\.js$/, '');
          return defs[id] ? id : id + '/index';
        }
        function load(id) {
          if (cache[id]) return cache[id].exports;
          if (!defs[id]) throw new Error('xterm bundle: no module ' + id);
          var module = { exports: {} };
          cache[id] = module;
          defs[id](function (path) { return load(resolve(id, path)); }, module, module.exports);
          return module.exports;
        }
        var Terminal = load('lib/public/Terminal').Terminal;
        load('addons/fit/fit').apply(Terminal);
        window.Terminal = Terminal;
        })();

        """
        return Array(out.utf8)
    }

    static func jsonString(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}

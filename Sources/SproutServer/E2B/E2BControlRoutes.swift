import Foundation
import HTTPTypes
import Hummingbird
import SproutAPI
import SproutCore

/// E2B's control plane beside `/v1`: the routes the `e2b` SDKs call to
/// create, find, list, time out, connect to, pause and kill sandboxes,
/// translated onto Sprout's own services (same rules, same team scoping).
struct E2BControlRoutes {
    let services: SproutServices
    let tokens: EnvdTokens

    func register(on router: Router<SproutContext>) {
        let group = router.group()
            .add(middleware: E2BErrorMiddleware())
            .add(middleware: AuthMiddleware(keys: services.keys, clusterToken: services.config.clusterToken))
        for path in ["sandboxes", "v2/sandboxes"] {
            group.post(RouterPath(path)) { request, context in
                let body = try await JSONBody.decode(E2B.NewSandbox.self, from: request)
                var create = try Self.translate(body)
                create.fromPool = try Self.fromPool(request.headers[Self.poolHeader])
                let request = create
                try await services.builtins.ensure(request.env, for: try context.caller())
                let sandbox = try await services.lifecycle.create(request, for: try context.caller())
                return try JSONBody.response(created(sandbox), status: .created)
            }
            group.get(RouterPath(path)) { request, context in
                try await list(request, context, paginated: path.hasPrefix("v2"))
            }
            group.post(RouterPath(path + "/:id/connect")) { request, context in
                let body = try await JSONBody.decode(E2B.Connect.self, from: request, orIfEmpty: E2B.Connect())
                return try await connect(try context.parameters.require("id"), timeout: body.timeout, context)
            }
        }
        group.get("sandboxes/:id") { _, context in
            try JSONBody.response(detail(try await live(try context.parameters.require("id"), context), withToken: true))
        }
        group.delete("sandboxes/:id") { _, context in
            let id = try context.parameters.require("id")
            _ = try await live(id, context)
            _ = try await services.lifecycle.kill(id, for: try context.caller())
            return Response(status: .noContent)
        }
        group.get("sandboxes/:id/metrics") { request, context in
            let id = try context.parameters.require("id")
            _ = try await live(id, context)
            let (start, end) = try SandboxRoutes.timeRange(request)
            return try JSONBody.response(services.sandboxMetrics.samples(id, start: start, end: end).map {
                E2B.Metric(timestamp: E2B.rfc3339($0.timestamp), timestampUnix: Int($0.timestamp), cpuCount: $0.cpuCount,
                           cpuUsedPct: $0.cpuUsedPct, memUsed: $0.memUsedBytes, memTotal: $0.memTotalBytes, memCache: $0.memCacheBytes,
                           diskUsed: $0.diskUsedBytes, diskTotal: $0.diskTotalBytes)
            })
        }
        group.put("sandboxes/:id/network") { request, context in
            let body = try await JSONBody.decode(E2B.NetworkUpdate.self, from: request)
            guard body.egressProxy == nil, (body.rules ?? [:]).isEmpty else {
                throw SproutError(.unsupported, "egressProxy and per-domain rules are not supported by Sprout's egress policy")
            }
            let (internet, egress) = try Self.policy(allowOut: body.allowOut, denyOut: body.denyOut, internet: body.allowInternetAccess ?? true)
            let id = try context.parameters.require("id")
            _ = try await live(id, context)
            _ = try await services.lifecycle.setNetwork(id, internet: internet, egress: egress, for: try context.caller())
            return Response(status: .noContent)
        }
        group.post("sandboxes/:id/timeout") { request, context in
            let body = try await JSONBody.decode(E2B.Timeout.self, from: request)
            _ = try await services.lifecycle.setTimeout(try context.parameters.require("id"), seconds: body.timeout, for: try context.caller())
            return Response(status: .noContent)
        }
        group.post("sandboxes/:id/pause") { request, context in
            let body = try await JSONBody.decode(E2B.PauseRequest.self, from: request, orIfEmpty: E2B.PauseRequest())
            let id = try context.parameters.require("id")
            let sandbox = try await live(id, context)
            guard sandbox.state == .running else { throw SproutError(.conflict, "sandbox \(id) is \(sandbox.state.rawValue), not running") }
            _ = try await services.lifecycle.pause(id, autoResume: false, filesOnly: body.memory == false, for: try context.caller())
            return Response(status: .noContent)
        }
        group.post("sandboxes/:id/resume") { request, context in
            let body = try await JSONBody.decode(E2B.Connect.self, from: request, orIfEmpty: E2B.Connect())
            let id = try context.parameters.require("id")
            let sandbox = try await services.lifecycle.get(id, for: try context.caller())
            guard sandbox.state == .paused else { throw SproutError(.conflict, "sandbox \(id) is \(sandbox.state.rawValue), not paused") }
            return try await connect(id, timeout: body.timeout, context)
        }
        registerEnvRoutes(on: group)
        let unauthenticated = router.group().add(middleware: E2BErrorMiddleware())
        E2BTemplateRoutes(services: services).register(on: group, router: unauthenticated)
    }

    /// Forks, snapshots (envs frozen from a running sandbox), aliases, template deletes.
    func registerEnvRoutes(on group: RouterGroup<SproutContext>) {
        group.post("sandboxes/:id/fork") { request, context in
            let body = try await JSONBody.decode(E2B.Fork.self, from: request, orIfEmpty: E2B.Fork())
            let caller = try context.caller()
            // A killed sandbox is not found, as for every E2B route.
            _ = try await live(try context.parameters.require("id"), context)
            var forks = try await services.lifecycle.fork(try context.parameters.require("id"), count: body.count ?? 1, for: caller)
            if let timeout = body.timeout {
                for (i, fork) in forks.enumerated() { forks[i] = try await services.lifecycle.setTimeout(fork.id, seconds: timeout, for: caller) }
            }
            return try JSONBody.response(forks.map { E2B.ForkResult(sandbox: created($0)) }, status: .created)
        }
        group.post("sandboxes/:id/snapshots") { request, context in
            let body = try await JSONBody.decode(E2B.SnapshotRequest.self, from: request, orIfEmpty: E2B.SnapshotRequest())
            let env = try await services.lifecycle.snapshot(try context.parameters.require("id"), name: body.name, for: try context.caller())
            return try JSONBody.response(E2B.SnapshotInfo(snapshotID: env.id, names: [env.name]), status: .created)
        }
        group.get("snapshots") { request, context in
            let name = request.uri.queryParameters.get("name").map { String($0) }
            let envs = try await services.envs.list(for: try context.caller())
                .filter { !$0.builtin && (name == nil || $0.name == name) }
                .sorted { ($0.createdAt ?? 0) > ($1.createdAt ?? 0) }
            return try JSONBody.response(envs.map { E2B.SnapshotInfo(snapshotID: $0.id, names: [$0.name]) })
        }
        group.get("templates/aliases/:alias") { _, context in
            let env = try await services.envs.show(try Self.templateName(context, "alias"), for: try context.caller())
            return try JSONBody.response(E2B.TemplateAlias(templateID: env.id, public: env.builtin))
        }
        group.delete("templates/:id") { _, context in
            let deleted = try await services.lifecycle.deleteEnv(try Self.templateName(context, "id"), force: false, for: try context.caller())
            return Response(status: .noContent, headers: [.sproutDeletedEnvs: deleted.joined(separator: ",")])
        }
    }

    /// A template id, name or `name:tag` from the path: the SDKs percent-encode it as one segment.
    static func templateName(_ context: SproutContext, _ parameter: String) throws -> String {
        let raw = try context.parameters.require(parameter)
        return raw.removingPercentEncoding ?? raw
    }

    /// Resumes a paused sandbox (201) or answers for a running one (200);
    /// the timeout is extended to `timeout` from now, never shortened.
    func connect(_ id: String, timeout: Int?, _ context: SproutContext) async throws -> Response {
        let caller = try context.caller()
        var sandbox = try await live(id, context)
        var status = HTTPResponse.Status.ok
        // Falling asleep or waking up: let that finish first.
        let deadline = Date().timeIntervalSince1970 + 60
        while [.pausing, .resuming, .forking].contains(sandbox.state), Date().timeIntervalSince1970 < deadline {
            try await Task.sleep(for: .milliseconds(50))
            sandbox = try await live(id, context)
        }
        if sandbox.state == .paused {
            sandbox = try await services.lifecycle.resume(id, for: caller)
            status = .created
        }
        if let timeout {
            let wanted = Date().timeIntervalSince1970 + Double(timeout)
            if (sandbox.expiresAt ?? 0) < wanted {
                sandbox = try await services.lifecycle.setTimeout(id, seconds: timeout, for: caller)
            }
        }
        return try JSONBody.response(created(sandbox), status: status)
    }

    /// `GET /sandboxes` (running and paused) and `GET /v2/sandboxes` with
    /// `state`, `metadata`, `template` (an env id, or a name: all its
    /// versions), `startedAfter` (RFC 3339), `order` (`desc`, newest first, by
    /// default, or `asc`), `limit` and `nextToken`.
    func list(_ request: Request, _ context: SproutContext, paginated: Bool) async throws -> Response {
        let query = request.uri.queryParameters
        var states: Set<E2B.State> = [.running, .paused]
        if let state = query.get("state") {
            let named = state.split(separator: ",").map(String.init)
            let unknown = named.filter { E2B.State(rawValue: $0) == nil }
            guard unknown.isEmpty else { throw SproutError(.invalidArgument, "unknown state \(unknown.sorted().joined(separator: ","))") }
            states = Set(named.compactMap(E2B.State.init(rawValue:)))
        }
        let metadata = try Self.metadataFilter(query.get("metadata"))
        let template = query.get("template").map { String($0) }
        let startedAfter = try query.get("startedAfter").map { text -> Double in
            guard let time = E2B.parseRFC3339(String(text)) else {
                throw SproutError(.invalidArgument, "startedAfter must be an RFC 3339 time, got \(text.prefix(64))")
            }
            return time
        }
        let ascending: Bool
        switch query.get("order") {
        case nil, "desc": ascending = false
        case "asc": ascending = true
        case let other?: throw SproutError(.invalidArgument, "order must be asc or desc, got \(other.prefix(16))")
        }
        var sandboxes = try await services.lifecycle.list(for: try context.caller())
            .filter { E2B.state($0.state).map(states.contains) ?? false }
            .filter { sandbox in metadata.allSatisfy { sandbox.metadata[$0.key] == $0.value } }
            .filter { template == nil || Self.env($0.env, matches: template!) }
            // Inclusive at the precision `startedAt` is returned with: a
            // sandbox's own `startedAt` finds it.
            .filter { startedAfter == nil || E2B.milliseconds($0.createdAt) >= Int64((startedAfter! * 1000).rounded()) }
            .sorted { ascending ? ($0.createdAt, $0.id) < ($1.createdAt, $1.id) : ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        var headers = HTTPFields()
        if paginated {
            let limit = try query.get("limit").map { text -> Int in
                guard let n = Int(text), (1...1000).contains(n) else { throw SproutError(.invalidArgument, "limit must be 1-1000") }
                return n
            } ?? 100
            if let token = query.get("nextToken") {
                // The token is the id of the last sandbox of the previous page.
                guard let index = sandboxes.firstIndex(where: { $0.id == token }) else {
                    throw SproutError(.invalidArgument, "nextToken \(token.prefix(64)) is not valid")
                }
                sandboxes.removeFirst(index + 1)
            }
            if sandboxes.count > limit {
                sandboxes = Array(sandboxes.prefix(limit))
                headers[HTTPField.Name("x-next-token")!] = sandboxes.last!.id
            }
        }
        var response = try JSONBody.response(sandboxes.map { detail($0, withToken: false) })
        response.headers.append(contentsOf: headers)
        return response
    }

    func created(_ sandbox: API.Sandbox) -> E2B.Sandbox {
        E2B.Sandbox(templateID: sandbox.env, sandboxID: sandbox.id, envdAccessToken: tokens.token(for: sandbox.id),
                    trafficAccessToken: tokens.token(for: sandbox.id), domain: services.domain)
    }

    func detail(_ sandbox: API.Sandbox, withToken: Bool) -> E2B.SandboxDetail {
        let ends = sandbox.expiresAt ?? (Date().timeIntervalSince1970 + (sandbox.remainingSeconds ?? 0))
        return E2B.SandboxDetail(
            templateID: sandbox.env, sandboxID: sandbox.id, startedAt: E2B.rfc3339(sandbox.createdAt), endAt: E2B.rfc3339(ends),
            envdAccessToken: withToken ? tokens.token(for: sandbox.id) : nil,
            domain: services.domain, cpuCount: max(1, Int(sandbox.cpu.rounded(.up))), memoryMB: sandbox.memoryMB, diskSizeMB: sandbox.diskMB ?? 0,
            metadata: sandbox.metadata, state: E2B.state(sandbox.state) ?? .running,
            lifecycle: E2B.Lifecycle(autoResume: sandbox.onTimeout == "pause" && sandbox.autoResume == true, onTimeout: sandbox.onTimeout ?? "kill"),
            volumeMounts: sandbox.volumes.map { $0.map { E2B.VolumeMount(name: $0.volume, path: $0.path) } })
    }

    /// The caller's sandbox while it is running or paused; ended ones are not found, as in E2B.
    func live(_ id: String, _ context: SproutContext) async throws -> API.Sandbox {
        let sandbox = try await services.lifecycle.get(id, for: try context.caller())
        guard E2B.state(sandbox.state) != nil else { throw SproutError(.notFound, "sandbox \(id) not found") }
        return sandbox
    }

    /// Sprout's one addition to E2B's create: `Sprout-Pool: no` asks for a
    /// sandbox of its own rather than one from the warm pool (as
    /// `from_pool: false` does on `/v1`); the E2B SDKs send it with
    /// `api_headers`.
    static let poolHeader = HTTPField.Name("Sprout-Pool")!

    static func fromPool(_ value: String?) throws -> Bool? {
        switch value?.lowercased() {
        case nil: return nil
        case "yes", "true", "1": return true
        case "no", "false", "0": return false
        case let other?: throw SproutError(.invalidArgument, "Sprout-Pool must be yes or no, not '\(other)'")
        }
    }

    /// An env id matches itself and its name (`my-app` for `my-app-3f9c2a1b`).
    static func env(_ id: String, matches template: String) -> Bool {
        guard id != template else { return true }
        guard id.hasPrefix(template + "-") else { return false }
        let rest = id.dropFirst(template.count + 1)
        return rest.count == 8 && rest.allSatisfy(\.isHexDigit)
    }

    /// E2B's create body as Sprout's: the template is an env id or name;
    /// `network.allowOut` is an egress allow-list, `denyOut` may only deny
    /// everything (Sprout's policy is allow-lists, not deny-lists).
    static func translate(_ body: E2B.NewSandbox) throws -> API.CreateSandbox {
        let (internet, egress) = try policy(allowOut: body.network?.allowOut, denyOut: body.network?.denyOut,
                                            internet: body.allowInternetAccess ?? true)
        let autoResume = body.autoResume?.enabled == true
        return API.CreateSandbox(env: body.templateID, timeoutSeconds: body.timeout, envVars: body.envVars, metadata: body.metadata,
                                 internet: internet, egress: egress.isEmpty ? nil : egress,
                                 onTimeout: body.autoPause == true || autoResume ? "pause" : nil, autoResume: autoResume ? true : nil,
                                 pauseMemory: body.autoPauseMemory == false ? false : nil,
                                 volumes: body.volumeMounts.map { $0.map { API.VolumeMount(volume: $0.name, path: $0.path) } })
    }

    /// E2B's allow/deny lists as Sprout's policy: `allowOut` is an egress
    /// allow-list of IPv4 CIDRs or addresses; `denyOut` may only deny
    /// everything (Sprout's policy is allow-lists, not deny-lists).
    static func policy(allowOut: [String]?, denyOut: [String]?, internet allowed: Bool) throws -> (Bool, [String]) {
        let deny = denyOut ?? []
        let allow = (allowOut ?? []).map { $0.contains("/") ? $0 : $0 + "/32" }
        guard deny.allSatisfy({ $0 == "0.0.0.0/0" }) else {
            throw SproutError(.invalidArgument, "network.denyOut may only be [\"0.0.0.0/0\"]: Sprout's egress policy is an allow-list (network.allowOut)")
        }
        if !allow.isEmpty { return (allowed, allow) }
        return (allowed && deny.isEmpty, [])
    }

    /// `metadata=k1%3Dv1%26k2%3Dv2`: the parameter, once decoded, is itself
    /// a query string whose parts are encoded again.
    static func metadataFilter(_ raw: String?) throws -> [String: String] {
        guard let raw, !raw.isEmpty else { return [:] }
        var pairs: [String: String] = [:]
        for part in raw.split(separator: "&") {
            let kv = part.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            guard kv.count == 2, !kv[0].isEmpty else { throw SproutError(.invalidArgument, "metadata filter must be key=value pairs") }
            pairs[kv[0]] = kv[1]
        }
        return pairs
    }
}

/// Errors on E2B's routes as E2B answers them: `{"code": status, "message"}`.
struct E2BErrorMiddleware: RouterMiddleware {
    typealias Context = SproutContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as SproutError {
            let answer = APIError(error: error)
            var response = Self.response(answer.status, error.message)
            if let retry = answer.retryAfter { response.headers[.retryAfter] = retry }
            return response
        } catch let error as DecodingError {
            return Self.response(.badRequest, "malformed request body: \(error)")
        } catch let error as SandboxLifecycle.VolumesElsewhere {
            let mapped = APIError(error)
            var response = Self.response(mapped.status, mapped.error.message)
            response.headers[APIError.placeElsewhereHeader] = mapped.placeElsewhere
            return response
        } catch let error as HTTPResponseError {
            return Self.response(error.status, error.status.reasonPhrase)
        }
    }

    static func response(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONEncoder().encode(E2B.ErrorBody(code: status.code, message: message))) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

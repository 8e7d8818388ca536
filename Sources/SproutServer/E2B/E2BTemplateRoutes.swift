import Foundation
import Hummingbird
import SproutAPI
import SproutCore
import SproutStore
import SproutSystem

/// E2B's template builder (the SDK's `Template().…` and `Template.build`):
/// a build requested by name, its `COPY` files uploaded by hash (only when
/// the server lacks them), its steps pushed as an ordinary Sprout build,
/// and its status and logs polled. The template is an env named after it;
/// `Sandbox.create(name)` starts it (warm when it has a start command).
struct E2BTemplateRoutes {
    let services: SproutServices
    var builds: E2BTemplateBuilds { services.templateBuilds }
    var files: E2BTemplateFiles { E2BTemplateFiles(root: services.config.dataDirectory + "/template-files") }

    /// `group`: E2B's authenticated routes; `router`: the upload link, which carries its own token.
    func register(on group: RouterGroup<SproutContext>, router: RouterGroup<SproutContext>) {
        group.post("v3/templates") { request, context in
            let body = try await JSONBody.decode(E2B.TemplateRequest.self, from: request)
            guard let full = body.name ?? body.alias, !full.isEmpty else { throw SproutError(.invalidArgument, "name is required") }
            // `name:tag`: the env is `name`; the tag (and `tags`) will name this build's env.
            let name = String(full.split(separator: ":", maxSplits: 1).first ?? "")
            try EnvGraph.validateName(name)
            let tags = (body.tags ?? []) + (full.contains(":") ? [String(full.split(separator: ":", maxSplits: 1)[1])] : [])
            try Self.validateTags(tags)
            let id = await builds.open(E2BTemplateBuilds.Session(team: try context.caller().team, name: name, cpu: body.cpuCount,
                                                                 memoryMB: body.memoryMB, tags: tags),
                                       now: services.lifecycle.clock.now)
            return try JSONBody.response(E2B.TemplateRequestResponse(templateID: name, buildID: id, names: [name], tags: tags, aliases: [name]),
                                         status: .accepted)
        }
        group.get("templates/:id/files/:hash") { request, context in
            let team = try context.caller().team
            let hash = try context.parameters.require("hash")
            let path = try files.path(team: team, hash: hash)
            if FileSystem.exists(path) { return try JSONBody.response(E2B.FileUpload(present: true, url: nil), status: .created) }
            let token = await builds.uploadToken(team: team, hash: hash, now: services.lifecycle.clock.now)
            var scheme = services.config.tls == nil ? "http" : "https"
            var host = request.head.authority ?? "127.0.0.1:\(services.listeningPort.current)"
            // Through an API server of a fleet (the cluster token checked): the link points where the caller reached the fleet.
            if try context.caller().keyID.hasPrefix("fleet:"), let forwarded = request.headers[FleetRoutes.forwardedHost] {
                (host, scheme) = (forwarded, request.headers[FleetRoutes.forwardedScheme] == "https" ? "https" : "http")
            }
            return try JSONBody.response(E2B.FileUpload(present: false, url: "\(scheme)://\(host)/templates/files/upload/\(token)"), status: .created)
        }
        group.post("v2/templates/:id/builds/:build") { request, context in
            let body = try await JSONBody.decode(E2B.TemplateBuildStart.self, from: request)
            let caller = try context.caller()
            let id = try context.parameters.require("build")
            let session = try await builds.session(id, team: caller.team)
            guard session.build == nil && session.envID == nil else { throw SproutError(.conflict, "build \(id) was started already") }
            let push = try await translate(body, session: session, team: caller.team)
            do {
                let result = try await services.builder.push(push, for: caller)
                await builds.update(id) { $0.build = result.build?.id; $0.envID = result.envID }
                // The tags name the env from now on (while it builds, a create for them finds no env yet).
                try await services.envs.tag(session.name, session.tags, envID: result.envID, team: caller.team, at: services.lifecycle.clock.now)
            } catch {
                await builds.update(id) { $0.failure = (error as? SproutError)?.message ?? "\(error)" }
                throw error
            }
            return Response(status: .accepted)
        }
        group.get("templates/:id/builds/:build/status") { request, context in
            let caller = try context.caller()
            let id = try context.parameters.require("build")
            let session = try await builds.session(id, team: caller.team)
            let offset = Int(request.uri.queryParameters.get("logsOffset") ?? "0") ?? 0
            return try JSONBody.response(try await status(id, session, caller: caller, offset: max(0, offset)))
        }
        group.post("templates/tags") { request, context in
            let body = try await JSONBody.decode(E2B.AssignTags.self, from: request)
            let caller = try context.caller()
            try Self.validateTags(body.tags)
            let env = try await services.envs.resolve(body.target, team: caller.team)
            let name = String(body.target.split(separator: ":", maxSplits: 1)[0])
            try EnvGraph.validateName(name)
            try await services.envs.tag(name, body.tags, envID: env.id, team: caller.team, at: services.lifecycle.clock.now)
            return try JSONBody.response(E2B.AssignedTags(tags: body.tags, buildID: E2B.buildUUID(env.id)), status: .created)
        }
        group.delete("templates/tags") { request, context in
            let body = try await JSONBody.decode(E2B.DeleteTags.self, from: request)
            let removed = try await services.envs.untag(body.name, body.tags, team: try context.caller().team)
            guard removed > 0 || body.tags.isEmpty else { throw SproutError(.notFound, "\(body.name) has none of the tags \(body.tags.joined(separator: ", "))") }
            return Response(status: .noContent)
        }
        group.get("templates/:id/tags") { _, context in
            let caller = try context.caller()
            let name = try E2BControlRoutes.templateName(context, "id")
            _ = try await services.envs.resolve(name, team: caller.team)
            return try JSONBody.response(try await services.catalog.envs.tags(of: name, team: caller.team).map {
                E2B.TemplateTag(tag: $0.tag, buildID: E2B.buildUUID($0.envID), createdAt: E2B.rfc3339($0.createdAt))
            })
        }
        router.put("templates/files/upload/:token") { request, context in
            guard let upload = await builds.redeem(try context.parameters.require("token"), now: services.lifecycle.clock.now) else {
                return E2BErrorMiddleware.response(.forbidden, "this upload link is unknown, used or expired: ask for another")
            }
            let path = try files.path(team: upload.team, hash: upload.hash)
            try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o700)
            let temp = path + ".part-\(Identifiers.random(length: 6))"
            let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SproutError.system("create \(temp)") }
            var size: Int64 = 0
            do {
                defer { close(fd) }
                for try await buffer in request.body {
                    size += Int64(buffer.readableBytes)
                    guard size <= services.config.maxUploadBytes else { throw SproutError(.tooLarge, "files over \(services.config.maxUploadBytes) bytes") }
                    try buffer.withUnsafeReadableBytes { try Descriptor.writeAll(fd, $0) }
                }
                try sysCall("fsync \(temp)") { fsync(fd) }
            } catch {
                unlink(temp)
                throw error
            }
            try sysCall("rename \(temp)") { rename(temp, path) }
            return Response(status: .ok)
        }
    }

    static func validateTags(_ tags: [String]) throws {
        for tag in tags where tag.isEmpty || tag.count > 128 || !tag.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) {
            throw SproutError(.invalidArgument, "bad tag '\(tag.prefix(130))': 1-128 of A-Z, a-z, 0-9, '.', '_' and '-'")
        }
    }

    /// The SDK's template as a push of `session`'s name.
    func translate(_ body: E2B.TemplateBuildStart, session: E2BTemplateBuilds.Session, team: String) async throws -> API.Push {
        var steps: [API.Push.Step] = []
        for (index, step) in (body.steps ?? []).enumerated() {
            let number = index + 1
            var made: API.Push.Step
            if step.type.uppercased() == "COPY" {
                let args = step.args ?? []
                guard args.count >= 2, let hash = step.filesHash else {
                    throw SproutError(.invalidArgument, "step \(number): COPY needs a source, a destination and its files hash")
                }
                let tar = try files.path(team: team, hash: hash)
                guard FileSystem.exists(tar) else { throw SproutError(.invalidArgument, "step \(number): the files of COPY \(args[0]) were not uploaded") }
                let owner = args.count > 2 && !args[2].isEmpty ? args[2] : nil
                let mode = args.count > 3 && !args[3].isEmpty ? UInt32(args[3], radix: 8) : nil
                made = try await files.copyStep(tar, source: args[0], destination: args[1], owner: owner, mode: mode, number: number,
                                                blobs: services.lifecycle.stores.blobs, catalog: services.catalog, team: team)
            } else {
                made = try E2BTemplateTranslation.step(step, number: number)
            }
            made.force = step.force == true || (body.force == true && index == 0) ? true : nil
            steps.append(made)
        }
        let parent = try E2BTemplateTranslation.parent(body)
        if parent == "base" {
            // E2B's base image runs its steps and sandboxes as `user` in its home (`apt_install` asks for root itself).
            steps.insert(contentsOf: [API.Push.Step(kind: .user, user: "user", source: "base"),
                                      API.Push.Step(kind: .workdir, path: "/home/user", source: "base")], at: 0)
        }
        let start = body.startCmd.flatMap { $0.isEmpty ? nil : $0 }
        return API.Push(id: session.name, from: parent, run: [], start: start,
                        ready: start == nil ? nil : E2BTemplateTranslation.ready(body.readyCmd), cpu: session.cpu.map(Double.init),
                        memoryMB: session.memoryMB, files: [], steps: steps)
    }

    /// E2B's build status from the Sprout build: its log lines from `offset`, 100 at a time.
    func status(_ id: String, _ session: E2BTemplateBuilds.Session, caller: Identity, offset: Int) async throws -> E2B.TemplateBuildStatus {
        var answer = E2B.TemplateBuildStatus(templateID: session.name, buildID: id, status: "waiting", logEntries: [])
        if let failure = session.failure {
            answer.status = "error"
            answer.reason = E2B.BuildStatusReason(message: failure)
            return answer
        }
        guard let envID = session.envID else { return answer }
        guard let buildID = session.build else {
            // Unchanged: the env existed, nothing was built.
            answer.status = "ready"
            if offset == 0 { answer.logEntries = [E2B.BuildLogEntry(timestamp: E2B.rfc3339(services.lifecycle.clock.now), level: "info",
                                                                   message: "\(envID) is up to date: nothing to build")] }
            return answer
        }
        let build = try await services.builder.build(buildID, for: caller)
        let text = (try? Descriptor.readFile(services.builder.logPath(buildID), limit: 64 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let now = E2B.rfc3339(services.lifecycle.clock.now)
        answer.logEntries = lines.dropFirst(offset).prefix(100).map { E2B.BuildLogEntry(timestamp: now, level: "info", message: String($0)) }
        switch BuildStatus(rawValue: build.status) {
        case .succeeded?: answer.status = "ready"
        case .running?, .cancelling?: answer.status = "building"
        default:
            answer.status = "error"
            // The template's own step number (`N: step K …`), as the SDK matches it to the line that added it.
            let step = build.failedStep.flatMap { label -> String? in
                guard let range = label.range(of: ": step ") else { return nil }
                let digits = label[range.upperBound...].prefix { $0.isNumber }
                return digits.isEmpty ? nil : String(digits)
            }
            answer.reason = E2B.BuildStatusReason(message: build.error ?? "the build failed", step: step)
        }
        return answer
    }
}

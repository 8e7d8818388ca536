import Foundation
import Logging
import SproutAPI
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// What a sandbox starts from.
struct ResolvedEnv: Sendable {
    var id: String
    var base: String
    /// Layer digests above the base, bottom first.
    var layers: [String]
    /// A warm env's memory image and the agent token inside it.
    var memoryImage: String? = nil
    var memoryToken: String? = nil
    /// What a sandbox that boots runs before it is ready (nil: nothing).
    var start: EnvStart? = nil
    /// Volumes its sandboxes mount when a create names none.
    var volumes: [API.VolumeMount] = []
    /// What its processes get unless a request says otherwise.
    var process: API.ProcessDefaults? = nil
    /// The image it was made from, for an image's own env.
    var image: String? = nil
}

/// The env graph: names and ids, ancestry and descendants, publishing,
/// deletion with garbage collection. Envs are never edited in place.
public struct EnvGraph: Sendable {
    let catalog: Catalog
    let bases: any BaseProvider
    /// A fleet's object store: envs recorded on another node are found there (by id, or a name's newest publish).
    var remote: RemoteStore? = nil
    var logger = Logger(label: "sprout")
    /// Bytes of each built-in base, measured once.
    let baseBytes = Locked<[String: Int64]>([:])
    /// Each env's process defaults, read once (envs never change).
    let defaults = Locked<[String: API.ProcessDefaults]>([:])

    static let builtins = BaseImages.names

    /// A built-in base, an env id, or the newest published env with that
    /// name, as `team` sees it (another team's env is "not found"). A
    /// deleted env is found only for a sandbox that runs from it (`of:`).
    func resolve(_ reference: String, team: String, includeDeleted: Bool = false) async throws -> ResolvedEnv {
        if Self.builtins.contains(reference) { return ResolvedEnv(id: reference, base: reference, layers: []) }
        if let envID = try await tagged(reference, team: team) { return try await resolve(envID, team: team, includeDeleted: includeDeleted) }
        var record = try await catalog.envs.lookup(reference, team: team, includeDeleted: includeDeleted)
        if let remote, record?.id != reference, let shared = await shared(reference, team: team, local: record, in: remote) { record = shared }
        guard let record else {
            let drafts = try await catalog.envs.drafts(named: reference, team: team)
            if drafts > 0 {
                throw SproutError(.notFound, "no published env named '\(reference)' (it has \(drafts) unpublished; publish one or use its id)")
            }
            if let build = try await catalog.builds.running(named: reference, team: team) {
                // Its first build is under way: ask again, rather than hold a request past a client's timeout.
                throw SproutError(.notReady, "env '\(reference)' is being built (build \(build.id), \(build.steps) steps, "
                    + "started \(max(0, Int(Date().timeIntervalSince1970 - build.createdAt))) s ago): ask again once it is built")
            }
            throw SproutError(.notFound, "no env named '\(reference)'")
        }
        return ResolvedEnv(id: record.id, base: record.base, layers: record.layers, memoryImage: record.memoryImage,
                           memoryToken: record.memoryToken, start: record.start.map { EnvStart(command: $0, ready: record.ready,
                                                                                                 timeoutSeconds: record.startTimeout) },
                           volumes: record.volumes ?? [], process: record.process, image: record.image)
    }

    /// The env another node of the fleet recorded under `reference`: the
    /// env its name was last published as, or the env with that id; taken
    /// into this node's catalog. Nil when the store knows it no better than
    /// `local` (or cannot be asked: then the local record stands, logged).
    private func shared(_ reference: String, team: String, local: EnvRecord?, in remote: RemoteStore) async -> EnvRecord? {
        do {
            let named = try await remote.storedName(reference, team: team)
            guard let id = named ?? (local == nil ? reference : nil), id != local?.id else { return nil }
            guard let env = try await remote.storedEnv(id), env.team == team || env.team == BuiltinEnvs.team, env.deletedAt == nil,
                  named != nil || env.id == reference
            else { return nil }
            return try await catalog.envs.insertIfAbsent(env)
        } catch {
            logger.warning("the object store could not be asked for an env; using this node's", metadata: [
                "env": "\(reference)", "error": "\(error)",
            ])
            return nil
        }
    }

    /// Points `tags` of `name` at `envID`; in a fleet, in the store too, where every node finds them.
    func tag(_ name: String, _ tags: [String], envID: String, team: String, at now: Double) async throws {
        try await catalog.envs.tag(name, tags, envID: envID, team: team, at: now)
        if let remote { for tag in tags { try await remote.putTag(name, tag, team: team, env: envID) } }
    }

    /// Removes `tags` of `name` (here and from the store); how many this node had.
    func untag(_ name: String, _ tags: [String], team: String) async throws -> Int {
        let removed = try await catalog.envs.untag(name, tags, team: team)
        if let remote { for tag in tags { try await remote.deleteTag(name, tag, team: team) } }
        return removed
    }

    /// The env `name:tag` names, when `reference` is one the team has tagged
    /// (in a fleet, as the store says: a tag set on another node counts).
    func tagged(_ reference: String, team: String) async throws -> String? {
        let parts = reference.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, (try? Self.validateName(String(parts[0]))) != nil else { return nil }
        if let remote {
            do {
                if let shared = try await remote.storedTag(String(parts[0]), String(parts[1]), team: team) { return shared }
            } catch {
                logger.warning("the object store could not be asked for a tag; using this node's", metadata: [
                    "tag": "\(reference)", "error": "\(error)",
                ])
            }
        }
        return try await catalog.envs.tagged(String(parts[0]), String(parts[1]), team: team)
    }

    /// What processes of env `id`'s sandboxes get unless a request says
    /// otherwise (none for a built-in base, or an env that is gone).
    func processDefaults(_ id: String) async -> API.ProcessDefaults {
        if let known = defaults.current[id] { return known }
        guard !Self.builtins.contains(id), let record = try? await catalog.envs.find(id) else { return API.ProcessDefaults() }
        let found = record.process ?? API.ProcessDefaults()
        defaults.withLock { $0[id] = found }
        return found
    }

    public func list(for identity: Identity) async throws -> [API.Env] {
        var builtins: [API.Env] = []
        for name in Self.builtins {
            builtins.append(API.Env(id: name, name: name, parent: nil, base: name, layers: [], builtin: true, createdAt: nil, ownBytes: 0,
                                    published: true, totalBytes: baseBytes.current[name]))
        }
        let shipped = try await catalog.envs.list(team: BuiltinEnvs.team).filter(\.published).map { record in
            var env = record.api
            env.builtin = true
            return env
        }
        return builtins + shipped + (try await catalog.envs.list(team: identity.team)).map(\.api)
    }

    public func show(_ reference: String, for identity: Identity) async throws -> API.Env {
        let resolved = try await resolve(reference, team: identity.team)
        if Self.builtins.contains(resolved.id) { return try await list(for: identity).first { $0.id == resolved.id }! }
        guard let record = try await catalog.envs.find(resolved.id) else {
            throw SproutError(.notFound, "no env named '\(reference)'")
        }
        var env = record.api
        env.builtin = record.team == BuiltinEnvs.team
        return env
    }

    /// Moves (or, with `false`, takes away) the name's pointer to this env.
    public func setPublished(_ reference: String, _ published: Bool, for identity: Identity) async throws -> API.Env {
        guard !Self.builtins.contains(reference) else {
            throw SproutError(.invalidArgument, "the built-in env '\(reference)' is always published")
        }
        return try await catalog.envs.setPublished(reference, published, team: identity.team).api
    }

    /// `reference` and its ancestors (root last) and descendants.
    public func tree(_ reference: String, for identity: Identity) async throws -> API.EnvTree {
        let env = try await resolve(reference, team: identity.team)
        let all = try await catalog.envs.list(team: identity.team)
        let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        var ancestors: [String] = []
        var cursor = byID[env.id]?.parent
        while let id = cursor {
            ancestors.append(id)
            cursor = byID[id]?.parent
        }
        let children = Dictionary(grouping: all, by: \.parent)
        var descendants: [API.EnvTree.Node] = []
        func walk(_ id: String, depth: Int) {
            for child in (children[id] ?? []).sorted(by: { $0.createdAt < $1.createdAt }) {
                descendants.append(API.EnvTree.Node(id: child.id, parent: id, depth: depth))
                walk(child.id, depth: depth + 1)
            }
        }
        walk(env.id, depth: 1)
        return API.EnvTree(id: env.id, ancestors: ancestors, descendants: descendants)
    }

    /// The bytes of an env's whole chain (for the totals `env list` shows).
    func chainBytes(_ env: ResolvedEnv) async throws -> Int64 {
        if let record = try await catalog.envs.find(env.id) { return record.totalBytes }
        if let known = baseBytes.current[env.base] { return known }
        let bytes = await LayerStore.diskUsage(bases.path(env.base))
        baseBytes.withLock { $0[env.base] = bytes }
        return bytes
    }

    static func validateName(_ name: String) throws {
        guard !name.isEmpty, name.count <= 64, !builtins.contains(name),
            name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw SproutError(.invalidArgument, "env name must be 1-64 characters of a-z, 0-9, '-' and '_', and not a built-in name")
        }
    }
}

extension API.ProcessDefaults {
    /// A user as the defaults keep it: root (by name or uid) is no user, the agent's own.
    static func nonRoot(_ user: String) -> String? { user == "root" || user == "0" ? nil : user }
}

extension EnvRecord {
    var api: API.Env {
        API.Env(id: id, name: name, parent: parent, base: base, layers: layers, builtin: false, createdAt: createdAt,
                ownBytes: ownBytes, published: published, totalBytes: totalBytes, warm: memoryImage != nil,
                start: start, volumes: volumes, process: process, image: image)
    }
}

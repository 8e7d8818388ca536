import Hummingbird
import SproutCore

/// envd's routes: `/health`, `/files` and the Connect RPCs of
/// `process.Process` and `filesystem.Filesystem`, one route per RPC so
/// request metrics name it. Only `EnvdMiddleware` sends requests here, with
/// the sandbox it read in the context.
struct EnvdRoutes {
    let services: SproutServices
    let watchers: EnvdWatchers

    static let processMethods = ["Start", "Connect", "List", "SendSignal", "SendInput", "CloseStdin", "Update", "StreamInput"]
    static let filesystemMethods = [
        "Stat", "ListDir", "MakeDir", "Move", "Remove", "WatchDir", "CreateWatcher", "GetWatcherEvents", "RemoveWatcher",
    ]

    func responder() -> RouterResponder<SproutContext> {
        let router = Router(context: SproutContext.self)
        router.middlewares.add(E2BErrorMiddleware())
        router.get("health") { _, context in
            await serve(context, lookUpUser: false) { _ in Response(status: .noContent) }
        }
        router.get("files") { request, context in await serve(context) { try await $0.download(request) } }
        router.post("files") { request, context in await serve(context) { try await $0.upload(request) } }
        for method in Self.processMethods {
            router.post("process.Process/\(method)") { request, context in
                await rpc(request, context) { try await $0.processCall(method, request, streaming: $1) }
            }
        }
        for method in Self.filesystemMethods {
            router.post("filesystem.Filesystem/\(method)") { request, context in
                await rpc(request, context) { try await $0.filesystemCall(method, request, streaming: $1) }
            }
        }
        for service in ["process.Process", "filesystem.Filesystem"] {
            router.post("\(service)/:method") { request, context in
                let failure = EnvdService.unimplemented(service, context.parameters.get("method") ?? "")
                return ConnectRPC.isStreaming(request) ? ConnectRPC.streamError(failure, ConnectRPC.Codec(request)) : ConnectRPC.unaryError(failure)
            }
        }
        return router.buildResponder()
    }

    /// The service for the request `EnvdMiddleware` let in: its sandbox
    /// running (woken if it sleeps until a request), its user looked up.
    func service(_ context: SproutContext, lookUpUser: Bool) async throws -> EnvdService {
        guard let call = context.envd else { throw SproutError(.internal, "an envd route without its sandbox") }
        let sandbox = try await services.lifecycle.open(record: call.record)
        var service = EnvdService(services: services, watchers: watchers, sandbox: sandbox, user: call.user)
        if lookUpUser {
            service.user = try await service.withAgent { try await call.user.lookup(sandbox: sandbox.id, agent: $0, default: sandbox.user) }
        }
        return service
    }

    func serve(_ context: SproutContext, lookUpUser: Bool = true, _ body: (EnvdService) async throws -> Response) async -> Response {
        do {
            return try await body(try await service(context, lookUpUser: lookUpUser))
        } catch {
            let failure = ConnectRPC.Failure(error)
            return E2BErrorMiddleware.response(failure.code.status, failure.message)
        }
    }

    func rpc(_ request: Request, _ context: SproutContext, _ body: (EnvdService, Bool) async throws -> Response) async -> Response {
        let streaming = ConnectRPC.isStreaming(request)
        do {
            return try await body(try await service(context, lookUpUser: true), streaming)
        } catch {
            let failure = ConnectRPC.Failure(error)
            return streaming ? ConnectRPC.streamError(failure, ConnectRPC.Codec(request)) : ConnectRPC.unaryError(failure)
        }
    }
}

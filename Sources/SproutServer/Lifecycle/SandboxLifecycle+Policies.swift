import SproutAPI
import Foundation
import SproutCore
import SproutSystem

/// What the lifecycle does when the supervisor finds a sandbox past its
/// timeout or idle for long enough: every decision by the injected clock.
extension SandboxLifecycle {
    /// Kills (or, for those that ask, pauses) every running sandbox whose
    /// timeout has passed. One that is busy (being snapshotted, say) is left
    /// for the next tick; one being snapshotted gets a minute more.
    @discardableResult
    public func reapExpired() async -> Int {
        let expired = (try? await repository.expired(before: self.clock.now)) ?? []
        var reaped = 0
        for record in expired {
            if record.onTimeout == "pause" && (record.pauseFilesOnly || runtime.capabilities.memorySnapshot) {
                if await pauseOnTimeout(record) { reaped += 1 }
                continue
            }
            let done = try? await gate.runIfIdle(.kill, on: record.id) {
                try await killNow(record.id, reason: "timeout", error: nil)
            }
            if done != nil { reaped += 1 }
        }
        return reaped
    }

    /// Pauses every running sandbox that asked to sleep when idle and has had
    /// no request and no open stream for that long.
    @discardableResult
    public func pauseIdle() async -> Int {
        let candidates = ((try? await repository.idlePausing()) ?? []).filter { !$0.team.isEmpty }
        guard !candidates.isEmpty else { return 0 }
        var paused = 0
        for record in candidates {
            guard record.pauseFilesOnly || runtime.capabilities.memorySnapshot else { continue }
            guard let limit = record.idlePauseSeconds, let idle = activity.idleSeconds(record.id, since: record.createdAt), idle >= limit else { continue }
            do {
                let done: Bool? = try await gate.runIfIdle(.pause, on: record.id) {
                    _ = try await pauseNow(record.id, autoResume: record.resumeOnRequest, filesOnly: record.pauseFilesOnly)
                    await repository.note(record.id, kind: "idle", "paused after \(Int(idle)) s without a request or an open stream")
                    return true
                }
                if done == true { paused += 1 }
            } catch {
                // Not now (an open connection gVisor cannot save, say): try again after another idle spell.
                activity.touch(record.id)
                logger.withSandbox(record.id).notice("idle pause not done", metadata: ["error": "\(error)"])
            }
        }
        return paused
    }

    static let timeoutPauseRetrySeconds = 60.0

    /// A timeout that pauses: every process kept, the full timeout given
    /// again when it resumes. A pause refused for now is tried again for a
    /// minute; one that cannot be done ends in a kill, with why.
    func pauseOnTimeout(_ record: SandboxRecord) async -> Bool {
        let id = record.id
        let done: Bool? = await gate.runIfIdle(.pause, on: id) {
            do {
                _ = try await pauseNow(id, autoResume: record.resumeOnRequest, filesOnly: record.pauseFilesOnly)
                _ = try? await repository.modify(id) { $0.remainingSeconds = $0.lifetimeSeconds ?? Double(self.settings.defaultTimeoutSeconds) }
                await repository.note(id, kind: "timeout", "paused on timeout" + (record.resumeOnRequest ? "; the next request resumes it" : ""))
                metrics.timeoutPause(result: "paused")
                return true
            } catch {
                // Refused before anything changed (an open connection gVisor
                // cannot save, say): it keeps running; try again on the next
                // passes for a minute before giving up.
                if let current = try? await repository.find(id), current.state == .running,
                   self.clock.now - (current.expiresAt ?? self.clock.now) < Self.timeoutPauseRetrySeconds {
                    logger.withSandbox(id).notice("pause on timeout not done yet; trying again", metadata: ["error": "\(error)"])
                    return false
                }
                logger.withSandbox(id).warning("pause on timeout failed; killing", metadata: ["error": "\(error)"])
                metrics.timeoutPause(result: "failed")
                _ = try? await killNow(id, reason: "timeout", error: "the timeout's pause failed: \((error as? SproutError)?.message ?? "\(error)")")
                return true
            }
        }
        return done ?? false
    }
}


"""Drives a real Sprout server with the stock `e2b` SDK (pinned in
scripts/install-deps.sh). Run by the integration suite with E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY pointing at the server, and
SPROUT_OTHER_TEAM_KEY: a key of another team. Prints one line per check;
any failure raises and exits non-zero."""
import asyncio
import os
import time
import uuid

import httpx
from e2b import (AsyncSandbox, CommandExitException, NotFoundException, Sandbox, SandboxException, SandboxNotFoundException,
                 TimeoutException)
from e2b.sandbox.sandbox_api import SandboxQuery, SandboxState
from e2b.sandbox.commands.command_handle import PtySize

TEMPLATE = os.environ.get("E2B_TEST_TEMPLATE", "debian")
RUN = uuid.uuid4().hex[:8]


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    print("ok", name, flush=True)


def commands(sbx):
    r = sbx.commands.run("echo out $GREETING $CALL; echo err >&2", envs={"CALL": "per-call"})
    check("run: stdout, stderr, sandbox and call env vars", (r.stdout, r.stderr, r.exit_code) == ("out hi per-call\n", "err\n", 0), repr(r))
    r = sbx.commands.run("echo ${CALL:-gone}")
    check("run: a call's env vars do not leak into later calls", r.stdout == "gone\n", repr(r.stdout))
    check("run: cwd", sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n")
    try:
        sbx.commands.run("exit 3")
        check("run: a failing command raises", False, "no exception")
    except CommandExitException as e:
        check("run: a failing command raises CommandExitException with its code", e.exit_code == 3, repr(e))
    seen = []
    sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done", on_stdout=lambda line: seen.append(line))
    check("run: on_stdout streams as produced", "".join(seen) == "line1\nline2\nline3\n", repr(seen))

    bg = sbx.commands.run("sleep 60", background=True)
    pids = [p.pid for p in sbx.commands.list()]
    check("background: the command is listed by its real pid", bg.pid in pids, f"{bg.pid} not in {pids}")
    check("kill: SIGKILL by pid", sbx.commands.kill(bg.pid) is True)
    try:
        bg.wait()
        check("kill: the handle ends", False, "no exception")
    except CommandExitException as e:
        check("kill: the handle ends with the kill", e.exit_code != 0, repr(e))
    check("kill: an unknown pid answers False", sbx.commands.kill(999999) is False)

    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "piped\n")
    sbx.commands.close_stdin(cat.pid)
    check("stdin: send_stdin and close_stdin", cat.wait().stdout == "piped\n")

    detached = sbx.commands.run("sleep 0.5; echo after", background=True)
    detached.disconnect()
    again = sbx.commands.connect(detached.pid)
    check("connect: reattaching to a running command sees its later output", again.wait().stdout == "after\n")

    out = bytearray()
    term = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(term.pid, b"stty size; exit 0\n")
    term.wait(on_pty=lambda data: out.extend(data))
    check("pty: a terminal of the asked size", b"24 80" in out, repr(bytes(out[-200:])))
    out.clear()
    term = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(term.pid, PtySize(rows=40, cols=120))
    sbx.pty.send_stdin(term.pid, b"stty size; exit 0\n")
    term.wait(on_pty=lambda data: out.extend(data))
    check("pty: resize", b"40 120" in out, repr(bytes(out[-200:])))
    term = sbx.pty.create(PtySize(rows=24, cols=80))
    check("pty: kill", sbx.pty.kill(term.pid) is True)
    try:
        term.wait()
        check("pty: a killed terminal does not end cleanly", False, "exit 0")
    except CommandExitException as e:
        check("pty: a killed terminal ends by its signal", e.exit_code != 0, repr(e))

    try:
        sbx.commands.run("sleep 30; echo late", timeout=1)
        check("run: a command's timeout ends it", False, "no exception")
    except Exception as e:
        check("run: a command's timeout raises", "timeout" in type(e).__name__.lower() or "deadline" in str(e).lower(), repr(e))
    time.sleep(1)
    listed = [p.args for p in sbx.commands.list()]
    check("run: the process of a timed-out command is ended", not any("sleep 30; echo late" in " ".join(a) for a in listed), repr(listed))


def files(sbx):
    info = sbx.files.write("/tmp/e2b/a.txt", "hello file")
    check("files: write makes parents and answers the path", info.path == "/tmp/e2b/a.txt", repr(info))
    check("files: read", sbx.files.read("/tmp/e2b/a.txt") == "hello file")
    check("files: read bytes", bytes(sbx.files.read("/tmp/e2b/a.txt", format="bytes")) == b"hello file")
    check("files: read as a stream", b"".join(sbx.files.read("/tmp/e2b/a.txt", format="stream")) == b"hello file")
    hostname = sbx.files.read("/../../../etc/hostname")
    check("files: a path cannot climb out of the sandbox ('..' stops at its root)", hostname.strip() == sbx.sandbox_id, repr(hostname))
    check("files: list", [e.name for e in sbx.files.list("/tmp/e2b")] == ["a.txt"])
    check("files: exists", sbx.files.exists("/tmp/e2b/a.txt") and not sbx.files.exists("/tmp/e2b/none"))
    entry = sbx.files.get_info("/tmp/e2b/a.txt")
    check("files: get_info", (entry.size, entry.type.value, entry.permissions) == (10, "file", "-rw-r--r--"), repr(entry))
    check("files: make_dir", sbx.files.make_dir("/tmp/e2b/d") is True)
    check("files: make_dir of an existing dir answers False", sbx.files.make_dir("/tmp/e2b/d") is False)
    moved = sbx.files.rename("/tmp/e2b/a.txt", "/tmp/e2b/d/b.txt")
    check("files: rename", moved.path == "/tmp/e2b/d/b.txt" and sbx.files.read("/tmp/e2b/d/b.txt") == "hello file")
    sbx.files.remove("/tmp/e2b/d")
    check("files: remove", not sbx.files.exists("/tmp/e2b/d"))
    sbx.files.remove("/tmp/e2b/never")
    check("files: remove of a missing path succeeds", True)
    try:
        sbx.files.read("/tmp/e2b/missing")
        check("files: read of a missing file raises", False, "no exception")
    except NotFoundException:
        check("files: read of a missing file raises NotFoundException", True)
    blob = bytes(range(256)) * 4096
    sbx.files.write("/tmp/e2b/blob.bin", blob)
    check("files: 1 MiB of binary round-trips", bytes(sbx.files.read("/tmp/e2b/blob.bin", format="bytes")) == blob)
    url = sbx.upload_url("/tmp/e2b/signed.txt")
    up = httpx.post(url, files={"file": ("signed.txt", b"via a signed url")})
    check("files: upload_url takes a multipart upload without headers", up.status_code == 200, f"{up.status_code} {up.text}")
    down = httpx.get(sbx.download_url("/tmp/e2b/signed.txt"))
    check("files: download_url serves the file without headers", down.content == b"via a signed url", f"{down.status_code} {down.text}")
    expiring = httpx.get(sbx.download_url("/tmp/e2b/signed.txt", use_signature_expiration=60))
    check("files: a signed url with an expiry", expiring.content == b"via a signed url", expiring.text)
    forged = httpx.get(sbx.download_url("/tmp/e2b/signed.txt").replace("signature=v1_", "signature=v1_x"))
    check("files: a forged signature is 401", forged.status_code == 401, f"{forged.status_code} {forged.text}")
    other = httpx.get(sbx.download_url("/etc/hostname").replace("path=%2Fetc%2Fhostname", "path=%2Fetc%2Fpasswd"))
    check("files: a signature is for its path only", other.status_code == 401, f"{other.status_code}")
    sbx.files.write("/tmp/e2b/zipped.txt", "squeezed " * 1000, gzip=True)
    check("files: a gzip upload is stored decoded", sbx.files.read("/tmp/e2b/zipped.txt") == "squeezed " * 1000)
    check("files: a gzip download", sbx.files.read("/tmp/e2b/zipped.txt", gzip=True) == "squeezed " * 1000)
    base = os.environ["E2B_SANDBOX_URL"]
    auth = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": sbx._envd_access_token}
    bad = httpx.post(base + "/files?path=/tmp/e2b/bad", content=b"not gzip at all",
                     headers={**auth, "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    check("files: a body that is not gzip is 400 and writes nothing", bad.status_code == 400 and not sbx.files.exists("/tmp/e2b/bad"), f"{bad.status_code} {bad.text}")
    sbx.files.write_files([{"path": "/tmp/e2b/m1", "data": "one"}, {"path": "/tmp/e2b/m2", "data": "two"}])
    check("files: write_files (multipart, several parts)", sbx.files.read("/tmp/e2b/m2") == "two")


def lifecycle(sbx):
    sbx.commands.run("echo 41 > /tmp/counter")
    counter = sbx.commands.run("while :; do sleep 0.1; done", background=True)
    sbx.pause()
    check("pause: the sandbox is paused", Sandbox.get_info(sbx.sandbox_id).state.value == "paused")
    paused = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()]
    running = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items()]
    check("list: the state filter", sbx.sandbox_id in paused and sbx.sandbox_id not in running, f"{paused} {running}")
    try:
        sbx.commands.run("true")
        check("pause: daemon traffic to a paused sandbox fails", False, "no exception")
    except Exception as e:
        check("pause: daemon traffic to a paused sandbox fails clearly", "not running" in str(e).lower() or "not found" in str(e).lower(), repr(e))
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=300)
    check("connect: resumes the paused sandbox", Sandbox.get_info(sbx.sandbox_id).state.value == "running")
    check("connect: files survive", resumed.commands.run("cat /tmp/counter").stdout == "41\n")
    check("connect: processes survive", counter.pid in [p.pid for p in resumed.commands.list()])
    end = Sandbox.get_info(sbx.sandbox_id).end_at
    resumed.set_timeout(30)
    shorter = Sandbox.get_info(sbx.sandbox_id).end_at
    check("set_timeout: may shorten", shorter < end, f"{shorter} !< {end}")
    Sandbox.connect(sbx.sandbox_id, timeout=10)
    check("connect: never shortens the timeout", Sandbox.get_info(sbx.sandbox_id).end_at >= shorter)


def watch(sbx):
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    sbx.files.write("/tmp/watched/new.txt", "x")
    events = []
    deadline = time.time() + 5
    while time.time() < deadline and not any(e.name == "new.txt" and e.type.name == "WRITE" for e in events):
        time.sleep(0.2)
        events += handle.get_new_events()
    handle.stop()
    kinds = {e.type.name for e in events if e.name == "new.txt"}
    check("watch: a new file's CREATE and WRITE, named relative to the directory", {"CREATE", "WRITE"} <= kinds, repr(events))
    check("watch: no entries unless asked", all(e.entry is None for e in events), repr(events))
    handle = sbx.files.watch_dir("/tmp/watched", include_entry=True, allow_network_mounts=True)
    sbx.files.write("/tmp/watched/sized.txt", "12345")
    events = []
    deadline = time.time() + 5
    while time.time() < deadline and not any(e.name == "sized.txt" and e.entry is not None and e.entry.size == 5 for e in events):
        time.sleep(0.2)
        events += handle.get_new_events()
    handle.stop()
    check("watch: include_entry gives the entry with each event", any(e.name == "sized.txt" and e.entry and e.entry.size == 5 and e.entry.path == "/tmp/watched/sized.txt" for e in events), repr(events))


async def async_watch():
    sbx = await AsyncSandbox.create(template=TEMPLATE, timeout=60)
    try:
        await sbx.files.make_dir("/tmp/w")
        seen = []
        handle = await sbx.files.watch_dir("/tmp/w", on_event=lambda e: seen.append(e), include_entry=True)
        await sbx.files.write("/tmp/w/f", "1")
        for _ in range(25):
            if any(e.name == "f" for e in seen):
                break
            await asyncio.sleep(0.2)
        await handle.stop()
        check("watch: the async SDK's WatchDir stream, with entries", any(e.name == "f" and e.entry and e.entry.name == "f" for e in seen), repr(seen))
    finally:
        await sbx.kill()


def forks_and_snapshots(sbx):
    sbx.commands.run("echo forked-state > /opt/state")
    forks = sbx.fork(count=2)
    try:
        check("fork: two sandboxes", len(forks) == 2 and all(not isinstance(f, Exception) for f in forks), repr(forks))
        check("fork: each has the parent's files", all(f.commands.run("cat /opt/state").stdout == "forked-state\n" for f in forks))
    finally:
        for f in forks:
            if not isinstance(f, Exception):
                f.kill()
    snapshot = sbx.create_snapshot(name=f"snap-{RUN}")
    check("snapshot: an id and its name", bool(snapshot.snapshot_id) and f"snap-{RUN}" in snapshot.names, repr(snapshot))
    child = Sandbox.create(template=snapshot.snapshot_id, timeout=60)
    try:
        check("snapshot: a sandbox from it has the files", child.commands.run("cat /opt/state").stdout == "forked-state\n")
    finally:
        child.kill()
    listed = Sandbox.list_snapshots(name=f"snap-{RUN}").next_items()
    check("snapshot: listed by name", [x.snapshot_id for x in listed] == [snapshot.snapshot_id], repr(listed))
    check("snapshot: deleted", Sandbox.delete_snapshot(snapshot.snapshot_id) is True)
    check("snapshot: a deleted one is not found", Sandbox.delete_snapshot(snapshot.snapshot_id) is False)


def parity(sbx):
    """What E2B does and the SDK relies on, beyond the basics above."""
    import datetime
    info = Sandbox.get_info(sbx.sandbox_id)
    found = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(started_after=info.started_at)).next_items()]
    check("list: started_after a sandbox's own started_at finds it (inclusive at the precision returned)", sbx.sandbox_id in found, repr(found))
    later = info.started_at + datetime.timedelta(seconds=1)
    found = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(started_after=later)).next_items()]
    check("list: ... and a second later it does not", sbx.sandbox_id not in found, repr(found))

    sbx.files.write("/tmp/links/target.txt", "t")
    sbx.commands.run("ln -s /tmp/links/target.txt /tmp/links/to-file && ln -s target.txt /tmp/links/relative && ln -s /tmp/links /tmp/to-dir")
    entry = sbx.files.get_info("/tmp/links/to-file")
    check("get_info of a symlink follows it: the target's type, the resolved target",
          (entry.type.value, entry.symlink_target) == ("file", "/tmp/links/target.txt"), repr(entry))
    entry = sbx.files.get_info("/tmp/links/relative")
    check("... a relative link too", (entry.type.value, entry.symlink_target) == ("file", "/tmp/links/target.txt"), repr(entry))
    check("... a link to a directory is a directory", sbx.files.get_info("/tmp/to-dir").type.value == "dir")
    check("exists follows links", sbx.files.exists("/tmp/links/to-file") and sbx.files.exists("/tmp/to-dir"))
    listed = {e.name: e.type.value for e in sbx.files.list("/tmp/links")}
    check("list keeps reporting links as links", listed == {"target.txt": "file", "to-file": "symlink", "relative": "symlink"}, repr(listed))

    sbx.files.make_dir("/tmp/every")
    handle = sbx.files.watch_dir("/tmp/every", recursive=True, include_entry=True)
    sbx.commands.run("mkdir /tmp/every/sub && echo one > /tmp/every/sub/f")
    sbx.commands.run("echo two >> /tmp/every/sub/f")
    sbx.commands.run("echo three >> /tmp/every/sub/f")
    sbx.commands.run("rm /tmp/every/sub/f")
    events = []
    deadline = time.time() + 10
    while time.time() < deadline and not any(e.name == "sub/f" and e.type.name == "REMOVE" for e in events):
        time.sleep(0.2)
        events += handle.get_new_events()
    handle.stop()
    kinds = [e.type.name for e in events if e.name == "sub/f"]
    check("watch (recursive): every event of a nested file, in order, two appends two writes",
          kinds[:1] == ["CREATE"] and kinds[-3:] == ["WRITE", "WRITE", "REMOVE"], repr(kinds))
    made = [e for e in events if e.name == "sub"]
    check("watch: include_entry describes the nested directory made", made and made[0].type.name == "CREATE" and made[0].entry
          and made[0].entry.type.value == "dir", repr(made))

    victim = Sandbox.create(template=TEMPLATE, timeout=60)
    running = victim.commands.run("sleep 60", background=True)
    victim.kill()
    try:
        running.wait()
        check("a command whose sandbox is killed ends", False, "it finished")
    except TimeoutException as e:
        check("a command whose sandbox is killed ends with TimeoutException: killed or at its end of life",
              "killed or reached its end of life" in str(e), repr(e))
    try:
        victim.fork()
        check("fork of a killed sandbox is refused", False, "forked")
    except SandboxNotFoundException:
        check("fork of a killed sandbox is SandboxNotFoundException (404)", True)

    snapshot = sbx.create_snapshot(name=f"live-{RUN}")
    child = Sandbox.create(template=snapshot.snapshot_id, timeout=60)
    try:
        check("a snapshot that a running sandbox came from can be deleted", Sandbox.delete_snapshot(snapshot.snapshot_id) is True)
        check("... the sandbox keeps running from it", child.commands.run("cat /opt/state").stdout == "forked-state\n")
        try:
            Sandbox.create(template=snapshot.snapshot_id, timeout=60).kill()
            check("... and no new sandbox comes from it", False, "created")
        except SandboxException as e:
            check("... and no new sandbox comes from it (404)", "404" in str(e) and "no env named" in str(e), repr(e))
    finally:
        child.kill()

    kept = Sandbox.create(template=TEMPLATE, timeout=120)
    try:
        boot = kept.files.read("/proc/sys/kernel/random/boot_id")
        sleeper = kept.commands.run("sleep 1000", background=True)
        kept.pause()
        again = Sandbox.connect(kept.sandbox_id, timeout=120)
        check("pause with no mode keeps memory: processes and the boot carry on",
              sleeper.pid in [p.pid for p in again.commands.list()] and again.files.read("/proc/sys/kernel/random/boot_id") == boot)
        again.pause(mode="filesystem")
        fresh = Sandbox.connect(kept.sandbox_id, timeout=120)
        check("pause with mode=filesystem boots afresh: a new boot id", fresh.files.read("/proc/sys/kernel/random/boot_id") != boot)
    finally:
        kept.kill()


def listing():
    found = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN})).next_items()
    check("list: filtered by metadata", len(found) == 1 and found[0].metadata == {"suite": RUN}, repr(found))
    pages = Sandbox.list(limit=1)
    first = pages.next_items()
    check("list: pages of one", len(first) == 1 and pages.has_next, repr(first))
    second = pages.next_items()
    check("list: the next page is another sandbox", len(second) == 1 and second[0].sandbox_id != first[0].sandbox_id, repr(second))
    ours = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(template=TEMPLATE)).next_items()]
    check("list: by template", len(ours) >= 2 and not Sandbox.list(query=SandboxQuery(template="no-such-template")).next_items(), repr(ours))
    import datetime
    later = [s for s in Sandbox.list(query=SandboxQuery(started_after=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))).next_items()]
    check("list: started_after", later == [], repr(later))
    newest = [s.sandbox_id for s in Sandbox.list(order="desc").next_items()]
    oldest = [s.sandbox_id for s in Sandbox.list(order="asc").next_items()]
    check("list: order asc and desc", newest == list(reversed(oldest)) and len(newest) >= 2, f"{newest} {oldest}")


def ports(sbx):
    base = os.environ["E2B_SANDBOX_URL"]
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8080", "X-Access-Token": sbx._envd_access_token}
    closed = httpx.get(base + "/", headers=headers)
    check("ports: a port nothing listens on is 502 'port is not open'", closed.status_code == 502 and "port is not open" in closed.text, closed.text)
    server = (
        "perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>5,ReuseAddr=>1) or die;"
        " while($c=$s->accept){$r=<$c>; print $c \"HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nyou asked $r\"; close $c}'"
    )
    sbx.commands.run(server, background=True)
    for _ in range(50):
        r = httpx.get(base + "/hello?x=1", headers=headers)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    check("ports: E2b-Sandbox-Port reaches a server inside the sandbox, path and query kept", r.status_code == 200 and "GET /hello?x=1" in r.text, f"{r.status_code} {r.text}")
    check("ports: without the access token it is 401", httpx.get(base + "/", headers={**headers, "X-Access-Token": "x"}).status_code == 401)
    host = sbx.get_host(8080)
    check("get_host: names the port and the sandbox on the server's domain", host.startswith(f"8080-{sbx.sandbox_id}.localhost:"), host)
    # Python's resolver does not map *.localhost to loopback as curl does: the Host header says it.
    token = {"X-Access-Token": sbx._envd_access_token}
    r = httpx.get(base + "/by/host?y=2", headers={"Host": host, **token})
    check("get_host: the host reaches the port, path and query kept", r.status_code == 200 and "GET /by/host?y=2" in r.text, f"{r.status_code} {r.text}")
    r = httpx.get(base + "/", headers={"Host": host})
    check("get_host: without a credential it is 401", r.status_code == 401, f"{r.status_code}")
    r = httpx.get(base + "/health", headers={"Host": sbx.get_host(49983), **token})
    check("get_host: envd's port is the daemon", r.status_code == 204, f"{r.status_code} {r.text}")


def bad_input(sbx):
    base = os.environ["E2B_SANDBOX_URL"]
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": "wrong"}
    r = httpx.post(base + "/filesystem.Filesystem/Stat", json={"path": "/"}, headers={**headers, "Connect-Protocol-Version": "1"})
    check("daemon: a wrong access token is 401", r.status_code == 401, f"{r.status_code} {r.text}")
    good = {**headers, "X-Access-Token": sbx._envd_access_token, "Connect-Protocol-Version": "1"}
    r = httpx.post(base + "/filesystem.Filesystem/Nope", json={}, headers=good)
    check("daemon: an unknown method is unimplemented", r.status_code == 501 and r.json()["code"] == "unimplemented", r.text)
    r = httpx.post(base + "/filesystem.Filesystem/Stat", content=b"{not json", headers={**good, "Content-Type": "application/json"})
    check("daemon: a malformed message is invalid_argument", r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text)
    r = httpx.post(base + "/process.Process/Start", content=b"\x00\xff\xff\xff\xff", headers={**good, "Content-Type": "application/connect+json"})
    check("daemon: an oversized envelope ends the stream with an error", b"resource_exhausted" in r.content, repr(r.content))
    r = httpx.post(os.environ["E2B_API_URL"] + "/sandboxes", json={"templateID": "no-such-env"}, headers={"X-API-Key": os.environ["E2B_API_KEY"]})
    check("control: an unknown template is 404 with {code, message}", r.status_code == 404 and r.json()["code"] == 404, r.text)


def other_team(sbx):
    other = os.environ["SPROUT_OTHER_TEAM_KEY"]
    try:
        Sandbox.get_info(sbx.sandbox_id, api_key=other)
        check("teams: another team's sandbox is not found", False, "found")
    except NotFoundException:
        check("teams: another team's sandbox is not found", True)
    check("teams: another team lists none of ours", all(s.sandbox_id != sbx.sandbox_id for s in Sandbox.list(api_key=other).next_items()))


async def async_client():
    sbx = await AsyncSandbox.create(template=TEMPLATE, timeout=120)
    r = await sbx.commands.run("echo async")
    await sbx.files.write("/tmp/x", "y")
    content = await sbx.files.read("/tmp/x")
    await sbx.kill()
    check("async: create, run, files, kill", (r.stdout, content) == ("async\n", "y"), repr((r.stdout, content)))


def auto_pause():
    sbx = Sandbox.create(template=TEMPLATE, timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        sbx.commands.run("echo slept > /opt/state")
        state = None
        deadline = time.time() + 20
        while time.time() < deadline and state != "paused":
            time.sleep(0.5)
            try:
                state = Sandbox.get_info(sbx.sandbox_id).state.value
            except NotFoundException:
                state = "gone"
                break
        # What happened, from Sprout's own API, for the message if it was not paused.
        events = httpx.get(os.environ["E2B_API_URL"] + f"/v1/sandboxes/{sbx.sandbox_id}/events",
                           headers={"X-API-Key": os.environ["E2B_API_KEY"]}).text if state != "paused" else ""
        check("lifecycle: on_timeout pause pauses at the timeout (not killed)", state == "paused", f"{state} {events}")
        life = Sandbox.get_info(sbx.sandbox_id).lifecycle
        check("lifecycle: get_info reports the lifecycle", str(life["on_timeout"]) == "pause" and life["auto_resume"] is True, repr(life))
        r = sbx.commands.run("cat /opt/state")
        check("lifecycle: auto_resume wakes it for the next command, files intact", r.stdout == "slept\n", repr(r.stdout))
        check("lifecycle: running again", Sandbox.get_info(sbx.sandbox_id).state.value == "running")
    finally:
        sbx.kill()
    fs = Sandbox.create(template=TEMPLATE, timeout=60)
    try:
        fs.commands.run("echo disk > /opt/f")
        bg = fs.commands.run("sleep 1000", background=True)
        fs.pause(mode="filesystem")
        check("pause: mode=filesystem pauses", Sandbox.get_info(fs.sandbox_id).state.value == "paused")
        again = Sandbox.connect(fs.sandbox_id, timeout=60)
        pids = [p.pid for p in again.commands.list()]
        check("pause: a filesystem pause keeps the files and boots afresh", again.commands.run("cat /opt/f").stdout == "disk\n" and bg.pid not in pids,
              repr(pids))
    finally:
        fs.kill()


def base_env():
    """The `base` template: E2B's default user, its home, its files, metadata
    kept as extended attributes, and pip through the host's CA."""
    sbx = Sandbox.create(template="base", timeout=300)
    try:
        r = sbx.commands.run("sudo -E sh -c 'echo $(id -un) $SCOPED'", envs={"SCOPED": "kept"})
        check("base: sudo works, and -E keeps a call's env vars", r.stdout == "root kept\n", repr(r.stdout))
        r = sbx.commands.run("id -un; id -u; pwd; echo $HOME")
        check("base: commands run as 'user' (uid 1000) in its home", r.stdout == "user\n1000\n/home/user\n/home/user\n", repr(r.stdout))
        r = sbx.commands.run("id -un; pwd", user="root")
        check("base: user='root' runs as root in /root", r.stdout == "root\n/root\n", repr(r.stdout))
        info = sbx.files.write("notes/rel.txt", "mine")
        check("base: a relative path is in the user's home", info.path == "/home/user/notes/rel.txt", repr(info))
        entry = sbx.files.get_info("notes/rel.txt")
        check("base: the user owns what it writes (and the directory made for it)",
              (entry.owner, entry.group) == ("user", "user") and sbx.files.get_info("/home/user/notes").owner == "user", repr(entry))
        r = sbx.commands.run("stat -c %U /home/user/notes/rel.txt; echo more >> /home/user/notes/rel.txt && cat /home/user/notes/rel.txt")
        check("base: the user's own shell can change its file", r.stdout == "user\nminemore\n", repr(r.stdout))
        root_file = sbx.files.write("/root/secret.txt", "root's", user="root")
        check("base: user='root' writes as root", sbx.files.get_info("/root/secret.txt", user="root").owner == "root", repr(root_file))
        try:
            sbx.commands.run("cat /root/secret.txt")
            check("base: the user cannot read root's files", False, "read it")
        except CommandExitException as e:
            check("base: the user cannot read root's files", e.exit_code != 0 and "Permission denied" in e.stderr, repr(e.stderr))
        try:
            sbx.commands.run("true", user="nobody-here")
            check("base: an unknown user is refused", False, "ran")
        except Exception as e:  # the SDK raises its InvalidArgument/Sandbox exception
            check("base: an unknown user is refused", "nobody-here" in str(e), repr(e))
        meta = sbx.files.write("/home/user/tagged.txt", "t", metadata={"origin": "sdk", "Run": RUN})
        # Keys travel as header names, which have no case: they come back in lower case.
        check("base: write answers the metadata it stored (keys in lower case)", meta.metadata == {"origin": "sdk", "run": RUN}, repr(meta))
        entry = sbx.files.get_info("/home/user/tagged.txt")
        check("base: get_info reads the metadata back", entry.metadata == {"origin": "sdk", "run": RUN}, repr(entry))
        listed = {e.name: e.metadata for e in sbx.files.list("/home/user")}
        check("base: list reports metadata per entry", listed.get("tagged.txt") == {"origin": "sdk", "run": RUN} and listed.get("notes") is None, repr(listed))
        moved = sbx.files.rename("/home/user/tagged.txt", "/home/user/moved.txt")
        check("base: a renamed file keeps its metadata", moved.metadata == {"origin": "sdk", "run": RUN}, repr(moved))
        tmp = sbx.files.write("/tmp/tagged.txt", "t", metadata={"where": "tmpfs"})
        check("base: metadata on a file in /tmp", sbx.files.get_info("/tmp/tagged.txt").metadata == {"where": "tmpfs"}, repr(tmp))
        # gzip both ways, seen on the wire.
        url = sbx.download_url("/home/user/moved.txt")
        raw = httpx.get(url, headers={"Accept-Encoding": "gzip"})
        check("base: a download asked for gzip comes gzip-encoded", raw.headers.get("content-encoding") == "gzip" and raw.content == b"t",
              f"{raw.headers} {raw.content!r}")
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
        check("base: and plain when not asked", plain.headers.get("content-encoding") is None and plain.content == b"t", f"{plain.headers}")
        r = sbx.commands.run("test -s $SSL_CERT_FILE && echo $PIP_CERT", timeout=30)
        check("base: the host's CA bundle is given with --trust-host-ca", r.stdout.strip() == "/etc/sprout-host-ca.pem", repr(r.stdout))
        probe = "curl -s -o /dev/null -w '%{http_code}' --max-time 10 https://pypi.org/simple/six/ || true"
        check("network: PyPI answers from inside (positive control)", sbx.commands.run(probe, timeout=30).stdout == "200", "no answer")
        sbx.update_network({"deny_out": ["0.0.0.0/0"]})
        check("network: update_network deny_out everything cuts it off", sbx.commands.run(probe, timeout=30).stdout != "200")
        try:
            sbx.update_network({"deny_out": ["10.0.0.0/8"]})
            check("network: a deny-list other than everything is refused", False, "accepted")
        except Exception as e:
            check("network: a deny-list other than everything is refused", "allow-list" in str(e), repr(e))
        sbx.update_network({})
        check("network: an empty update opens it again", sbx.commands.run(probe, timeout=30).stdout == "200")
        closed = Sandbox.create(template="base", timeout=60, allow_internet_access=False)
        try:
            check("network: allow_internet_access=False at create cuts it off", closed.commands.run(probe, timeout=30).stdout != "200")
        finally:
            closed.kill()
        listed = Sandbox.create(template="base", timeout=60, network={"allow_out": ["192.0.2.1"]})
        try:
            check("network: network.allow_out at create allows only its list", listed.commands.run(probe, timeout=30).stdout != "200")
        finally:
            listed.kill()
        r = sbx.commands.run("pip install --user --no-cache-dir --disable-pip-version-check six==1.17.0 && python3 -c 'import six; print(six.__version__)'",
                             timeout=180)
        check("base: pip install of a PyPI package inside, as the user", r.stdout.strip().endswith("1.17.0"), repr(r.stdout[-300:]))
        deadline = time.time() + 15
        metrics = sbx.get_metrics()
        while len(metrics) < 2 and time.time() < deadline:
            time.sleep(1)
            metrics = sbx.get_metrics()
        check("metrics: get_metrics returns samples with the sandbox's totals",
              len(metrics) >= 2 and metrics[-1].mem_total == 512 << 20 and metrics[-1].cpu_count == 1 and metrics[-1].mem_used > 0, repr(metrics[-2:]))
        since = sbx.get_metrics(start=metrics[-1].timestamp)
        check("metrics: start filters the range", len(since) >= 1 and all(m.timestamp >= metrics[-1].timestamp for m in since), repr(since))
    finally:
        sbx.kill()


def main():
    started = time.time()
    sbx = Sandbox.create(template=TEMPLATE, timeout=300, envs={"GREETING": "hi"}, metadata={"suite": RUN})
    check("create", sbx.is_running(), sbx.sandbox_id)
    spare = Sandbox.create(template=TEMPLATE, timeout=120)
    try:
        check("create: the access token is returned", bool(sbx._envd_access_token))
        commands(sbx)
        files(sbx)
        watch(sbx)
        asyncio.run(async_watch())
        forks_and_snapshots(sbx)
        parity(sbx)
        listing()
        ports(sbx)
        bad_input(sbx)
        other_team(sbx)
        lifecycle(sbx)
        asyncio.run(async_client())
        auto_pause()
        base_env()
    except BaseException:
        sbx.kill()
        raise
    finally:
        spare.kill()
    sbx.kill()
    check("kill: the sandbox is gone", not sbx.is_running())
    try:
        Sandbox.get_info(sbx.sandbox_id)
        check("kill: get_info raises", False, "found")
    except NotFoundException:
        check("kill: get_info of a killed sandbox raises NotFoundException", True)
    print(f"all checks passed in {time.time() - started:.1f} s")


main()

"""Commands, PTYs, files and watches through the stock SDK."""
import asyncio
import os

import httpx
from e2b import AsyncSandbox, CommandExitException, NotFoundException
from e2b.sandbox.commands.command_handle import PtySize

from sdk_common import TEMPLATE, check, eventually


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
    listed = []

    def ended():
        nonlocal listed
        listed = [p.args for p in sbx.commands.list()]
        return not any("sleep 30; echo late" in " ".join(a) for a in listed)
    check("run: the process of a timed-out command is ended", eventually(ended), repr(listed))


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


def watch(sbx):
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    sbx.files.write("/tmp/watched/new.txt", "x")
    events = []

    def written():
        events.extend(handle.get_new_events())
        return any(e.name == "new.txt" and e.type.name == "WRITE" for e in events)
    eventually(written)
    handle.stop()
    kinds = {e.type.name for e in events if e.name == "new.txt"}
    check("watch: a new file's CREATE and WRITE, named relative to the directory", {"CREATE", "WRITE"} <= kinds, repr(events))
    check("watch: no entries unless asked", all(e.entry is None for e in events), repr(events))
    handle = sbx.files.watch_dir("/tmp/watched", include_entry=True, allow_network_mounts=True)
    sbx.files.write("/tmp/watched/sized.txt", "12345")
    events = []

    def sized():
        events.extend(handle.get_new_events())
        return any(e.name == "sized.txt" and e.entry is not None and e.entry.size == 5 for e in events)
    eventually(sized)
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

"""Where Sprout must answer as E2B does: parity details, ports, bad input, other teams, the base env's user."""
import os

import httpx
from e2b import CommandExitException, NotFoundException, Sandbox, SandboxException, SandboxNotFoundException, TimeoutException
from e2b.sandbox.sandbox_api import SandboxQuery

from e2b.envd.filesystem.filesystem_pb import StatRequest, StatResponse
from e2b.envd.process.process_pb import ProcessConfig, StartRequest, StartResponse
from sdk_common import RUN, TEMPLATE, check, eventually


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

    def removed():
        events.extend(handle.get_new_events())
        return any(e.name == "sub/f" and e.type.name == "REMOVE" for e in events)
    eventually(removed)
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
    r = None

    def served():
        nonlocal r
        r = httpx.get(base + "/hello?x=1", headers=headers)
        return r.status_code == 200
    eventually(served)
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
    # Connect's binary codec, as other Connect clients use it: the SDK's own message classes.
    stat = StatRequest(path="/etc/hostname").to_binary()
    r = httpx.post(base + "/filesystem.Filesystem/Stat", content=stat, headers={**good, "Content-Type": "application/proto"})
    entry = StatResponse.from_binary(r.content).entry if r.status_code == 200 else None
    check("daemon: the binary codec (application/proto) answers in kind",
          r.headers.get("content-type") == "application/proto" and entry is not None and entry.name == "hostname" and entry.size > 0,
          f"{r.status_code} {r.headers.get('content-type')} {r.content[:200]!r}")
    start = StartRequest(process=ProcessConfig(cmd="/bin/echo", args=["proto-stream"])).to_binary()
    r = httpx.post(base + "/process.Process/Start", content=b"\x00" + len(start).to_bytes(4, "big") + start,
                   headers={**good, "Content-Type": "application/connect+proto"})
    frames, body = [], r.content
    while len(body) >= 5:
        flags, length = body[0], int.from_bytes(body[1:5], "big")
        frames.append((flags, body[5:5 + length]))
        body = body[5 + length:]
    events = [StartResponse.from_binary(m).event.event for f, m in frames if f == 0]
    output = b"".join(e.value.output.value for e in events if e.field == "data")
    check("daemon: a binary stream (application/connect+proto) carries the process's output and ends with {}",
          output == b"proto-stream\n" and frames[-1] == (2, b"{}"), repr(r.content[:300]))
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
        metrics = eventually(lambda: (lambda m: m if len(m) >= 2 else None)(sbx.get_metrics()), every=0.5) or []
        check("metrics: get_metrics returns samples with the sandbox's totals",
              len(metrics) >= 2 and metrics[-1].mem_total == 512 << 20 and metrics[-1].cpu_count == 1 and metrics[-1].mem_used > 0, repr(metrics[-2:]))
        since = sbx.get_metrics(start=metrics[-1].timestamp)
        check("metrics: start filters the range", len(since) >= 1 and all(m.timestamp >= metrics[-1].timestamp for m in since), repr(since))
    finally:
        sbx.kill()

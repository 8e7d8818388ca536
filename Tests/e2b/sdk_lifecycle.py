"""Sandbox lifecycles through the stock SDK: timeouts, pause and connect, forks and snapshots, listing, auto-pause."""
import os

import httpx
from e2b import AsyncSandbox, NotFoundException, Sandbox
from e2b.sandbox.sandbox_api import SandboxQuery, SandboxState

from sdk_common import RUN, TEMPLATE, check, eventually


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

        def settled():
            nonlocal state
            try:
                state = Sandbox.get_info(sbx.sandbox_id).state.value
            except NotFoundException:
                state = "gone"
            return state in ("paused", "gone")
        eventually(settled)
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

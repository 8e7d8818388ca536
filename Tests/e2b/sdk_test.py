"""Drives a real Sprout server with the stock `e2b` SDK (pinned in
scripts/install-deps.sh). Run by the integration suite with E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY pointing at the server, and
SPROUT_OTHER_TEAM_KEY: a key of another team. Prints one line per check;
any failure raises and exits non-zero. The checks live in sdk_*.py beside it."""
import asyncio
import os
import time

import httpx
from e2b import NotFoundException, Sandbox

from sdk_common import RUN, TEMPLATE, check
from sdk_lifecycle import async_client, auto_pause, forks_and_snapshots, lifecycle, listing
from sdk_parity import bad_input, base_env, other_team, parity, ports
from sdk_processes import async_watch, commands, files, watch
from sdk_templates import templates
from sdk_volumes import volumes


def metrics():
    """envd's calls are served as routes: request metrics name each RPC."""
    text = httpx.get(os.environ["E2B_API_URL"] + "/metrics", headers={"X-API-Key": os.environ["E2B_API_KEY"]}).text
    for route in ["/envd/process.Process/Start", "/envd/filesystem.Filesystem/ListDir", "/envd/files", "/envd/health"]:
        check(f"metrics: envd's {route} is labelled by its route", f'route="{route}"' in text,
              [line for line in text.splitlines() if "sprout_http_requests_total" in line and "envd" in line][:20])


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
        volumes()
        templates()
        metrics()
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

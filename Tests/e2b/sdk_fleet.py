"""The stock e2b SDK through a fleet's API server (E2B_API_URL and
E2B_SANDBOX_URL both the API server): create placed on a node, commands and
files through envd forwarded to it, listing, kill; with FLEET_TEMPLATES set
(nodes with an object store), the template builder; with FLEET_VOLUMES, volumes
(E2B_VOLUME_API_URL the API server too). Prints `ok ...` per check."""
import os
import sys
import tempfile

import httpx
from e2b import Sandbox, Template, Volume


def check(what, ok, detail=""):
    if not ok:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)
    print(f"ok {what}")


sbx = Sandbox.create("empty", timeout=120)
result = sbx.commands.run("echo through the fleet; hostname")
check("commands.run reaches the sandbox on its node", result.stdout == f"through the fleet\n{sbx.sandbox_id}\n", result.stdout)
sbx.files.write("/tmp/fleet.txt", "written via the API server")
check("files.write then files.read", sbx.files.read("/tmp/fleet.txt") == "written via the API server")
# Signed file URLs carry no headers: the API server finds the sandbox their signature names.
up = httpx.post(sbx.upload_url("/tmp/signed.txt"), files={"file": ("signed.txt", b"via a signed url through the fleet")})
check("upload_url through the API server", up.status_code == 200, f"{up.status_code} {up.text}")
down = httpx.get(sbx.download_url("/tmp/signed.txt", use_signature_expiration=60))
check("download_url through the API server", down.content == b"via a signed url through the fleet", f"{down.status_code} {down.text}")
forged = httpx.get(sbx.download_url("/tmp/signed.txt").replace("signature=v1_", "signature=v1_x"))
check("a forged signature through the API server is 401", forged.status_code == 401, f"{forged.status_code} {forged.text}")
listed = [s.sandbox_id for s in Sandbox.list().next_items()]
check("Sandbox.list merges the nodes' lists", sbx.sandbox_id in listed, listed)
check("get_info through the control plane", sbx.get_info().sandbox_id == sbx.sandbox_id)
sbx.kill()
check("kill", sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()])
print("fleet SDK checks passed")

if os.environ.get("FLEET_VOLUMES"):
    # A volume through the API server lives on one node; sandboxes that mount it are placed there.
    vol = Volume.create(f"fleet-vol-{os.getpid()}")
    vol.write_file("/hello.txt", "through the fleet's volume\n")
    check("a volume's file through the API server, with its token", vol.read_file("/hello.txt") == "through the fleet's volume\n")
    mounted = [Sandbox.create("empty", timeout=120, volume_mounts={"/mnt/vol": vol}) for _ in range(2)]
    for sbx in mounted:
        r = sbx.commands.run("cat /mnt/vol/hello.txt")
        check(f"a sandbox mounting it ({sbx.sandbox_id}) reads it", r.stdout == "through the fleet's volume\n", repr(r.stdout))
        sbx.kill()
    Volume.destroy(vol.volume_id)
    print("fleet volume checks passed")

if os.environ.get("FLEET_TEMPLATES"):
    # The template builder through the API server: the build runs on one node (its upload link
    # pointing back at the API server), and sandboxes of it start on any node (the env is in the store).
    context = tempfile.mkdtemp()
    with open(os.path.join(context, "hello.txt"), "w") as f:
        f.write("copied through the fleet\n")
    name = f"fleet-tpl-{os.getpid()}"
    template = Template(file_context_path=context).from_template("empty").copy("hello.txt", "/srv/hello.txt").run_cmd(
        "cat /srv/hello.txt /srv/hello.txt > /srv/twice.txt")
    info = Template.build(template, name)
    check("Template.build through the API server", info.template_id == name and Template.exists(name))
    # Two at once: placement puts them on both nodes.
    sandboxes = [Sandbox.create(name, timeout=120) for _ in range(2)]
    for sbx in sandboxes:
        r = sbx.commands.run("cat /srv/twice.txt")
        check(f"a sandbox of the template ({sbx.sandbox_id}) has its files", r.stdout == "copied through the fleet\n" * 2, repr(r.stdout))
        sbx.kill()
    # A tag set through the API server names the build on every node (two sandboxes at once: one per node).
    Template.assign_tags(name, ["stable"])
    tagged = [Sandbox.create(f"{name}:stable", timeout=120) for _ in range(2)]
    for sbx in tagged:
        r = sbx.commands.run("cat /srv/twice.txt")
        check(f"a sandbox of {name}:stable ({sbx.sandbox_id}) has its files", r.stdout == "copied through the fleet\n" * 2, repr(r.stdout))
        sbx.kill()
    # Deleted through the API server (E2B's DELETE /templates/{id}): gone on every node, by name and by tag.
    api = os.environ["E2B_API_URL"]
    r = httpx.delete(f"{api}/templates/{name}", headers={"X-API-Key": os.environ["E2B_API_KEY"]}, timeout=60)
    check("DELETE /templates/{id} through the API server", r.status_code == 204, f"{r.status_code} {r.text}")
    check("the deleted template no longer exists", not Template.exists(name))
    for reference in [name, f"{name}:stable", name, f"{name}:stable"]:  # twice each: placement tries both nodes
        try:
            Sandbox.create(reference, timeout=60).kill()
            check(f"no sandbox of the deleted {reference}", False, "created")
        except Exception as error:
            check(f"no sandbox of the deleted {reference}", "not found" in str(error).lower() or "404" in str(error), repr(error))
    print("fleet template checks passed")

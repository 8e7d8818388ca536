"""The stock e2b SDK through a fleet's API server (E2B_API_URL and
E2B_SANDBOX_URL both the API server): create placed on a node, commands and
files through envd forwarded to it, listing, kill. Prints `ok ...` per check."""
import sys
from e2b import Sandbox


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
listed = [s.sandbox_id for s in Sandbox.list().next_items()]
check("Sandbox.list merges the nodes' lists", sbx.sandbox_id in listed, listed)
check("get_info through the control plane", sbx.get_info().sandbox_id == sbx.sandbox_id)
sbx.kill()
check("kill", sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()])
print("fleet SDK checks passed")

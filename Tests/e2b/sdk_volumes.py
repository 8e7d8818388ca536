"""The stock SDK's volumes against Sprout: Volume.create/connect/list/get_info/
destroy, the volume's file calls (list, make_dir, exists, read_file,
write_file, remove, get_info, update_metadata) with its own token, and
Sandbox.create(volume_mounts=...). E2B_VOLUME_API_URL points the content
calls at the server, as E2B_API_URL does the rest."""
import os

from e2b import Sandbox, Volume
from e2b.exceptions import NotFoundException, VolumeException

from sdk_common import RUN, TEMPLATE, check


def volumes():
    name = f"sdk-{RUN}".lower()[:60]
    vol = Volume.create(name)
    check("volumes: create returns an id, the name and a token", vol.volume_id.startswith("vol_") and vol.name == name and bool(vol.token), vol.volume_id)
    try:
        check("volumes: list finds it", any(v.volume_id == vol.volume_id and v.name == name for v in Volume.list()))
        info = Volume.get_info(vol.volume_id)
        check("volumes: get_info answers its name and token", info.name == name and info.token == vol.token)
        again = Volume.connect(vol.volume_id)
        check("volumes: connect gives a usable volume", again.name == name and again.token == vol.token)

        # Files through the volume's own token, no sandbox.
        made = vol.make_dir("/data/raw", force=True)
        check("volumes: make_dir with force makes the parents", made.type == "directory" and made.path == "/data/raw", made)
        written = vol.write_file("/data/raw/a.csv", "x,y\n1,2\n", mode=0o640)
        check("volumes: write_file answers the entry", written.type == "file" and written.size == 8 and written.mode == 0o640, written)
        check("volumes: read_file reads it back", vol.read_file("/data/raw/a.csv") == "x,y\n1,2\n")
        check("volumes: read_file as bytes", vol.read_file("/data/raw/a.csv", format="bytes") == b"x,y\n1,2\n")
        check("volumes: exists", vol.exists("/data/raw/a.csv") and not vol.exists("/data/raw/none.csv"))
        names = [e.name for e in vol.list("/data")]
        check("volumes: list a directory", names == ["raw"], names)
        deep = [e.path for e in vol.list("/data", depth=2)]
        check("volumes: list with depth 2 goes one level down", deep == ["/data/raw", "/data/raw/a.csv"], deep)
        updated = vol.update_metadata("/data/raw/a.csv", uid=1234, gid=1234, mode=0o600)
        check("volumes: update_metadata sets owner and mode", (updated.uid, updated.gid, updated.mode) == (1234, 1234, 0o600), updated)
        try:
            vol.make_dir("/nope/deeper")
            check("volumes: make_dir without force needs the parent", False, "made")
        except NotFoundException:
            check("volumes: make_dir without force needs the parent (not found)", True)
        try:
            Volume(vol.volume_id, name, token="vt_wrong").list("/")
            check("volumes: a wrong token is refused", False, "listed")
        except Exception as e:
            check("volumes: a wrong token is refused", "401" in str(e) or "token" in str(e).lower(), repr(e))

        # Mounted in sandboxes: by the Volume, and by name.
        a = Sandbox.create(template=TEMPLATE, timeout=120, volume_mounts={"/mnt/vol": vol})
        b = Sandbox.create(template=TEMPLATE, timeout=120, volume_mounts={"/shared": name})
        try:
            seen = a.commands.run("cat /mnt/vol/data/raw/a.csv").stdout
            check("volumes: a sandbox reads what the volume API wrote", seen == "x,y\n1,2\n", seen)
            a.commands.run("echo from-a > /mnt/vol/from-a.txt", user="root")
            check("volumes: another sandbox sees the first one's write", b.commands.run("cat /shared/from-a.txt").stdout == "from-a\n")
            check("volumes: the volume API sees it too", vol.read_file("/from-a.txt") == "from-a\n")
            mounts = Sandbox.get_info(a.sandbox_id).volume_mounts
            check("volumes: get_info lists the sandbox's mounts", mounts == [{"name": name, "path": "/mnt/vol"}], mounts)
            try:
                Volume.destroy(vol.volume_id)
                check("volumes: destroy is refused while mounted", False, "destroyed")
            except VolumeException as e:
                check("volumes: destroy is refused while mounted", "mounted" in str(e), repr(e))
        finally:
            a.kill()
            b.kill()
        vol.remove("/data")
        check("volumes: remove takes a directory with its contents", not vol.exists("/data/raw/a.csv") and not vol.exists("/data"))
    finally:
        destroyed = Volume.destroy(vol.volume_id)
    check("volumes: destroy", destroyed and not Volume.destroy(vol.volume_id))
    check("volumes: a destroyed volume is not listed", all(v.volume_id != vol.volume_id for v in Volume.list()))

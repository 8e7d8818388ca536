#!/usr/bin/env python3
"""Checks openapi.yaml against a live Sprout server.

Validates the spec itself, then drives every documented operation with real
requests (creating and killing one sandbox) and validates each JSON response
against the schema the spec gives for its status. Exits non-zero on the first
mismatch. Usage: check-openapi.py SPEC BASE_URL API_KEY
"""
import base64
import json
import sys

import requests
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

spec_path, base, key = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
spec = yaml.safe_load(open(spec_path))
validate(spec)
H = {"X-API-Key": key}
checked = set()


def resolve(node):
    while "$ref" in node:
        parts = node["$ref"].lstrip("#/").split("/")
        node = spec
        for p in parts:
            node = node[p]
    return node


def schema_for(template, method, status, content_type):
    op = spec["paths"][template][method]
    responses = op["responses"]
    response = responses.get(str(status)) or responses.get("default")
    if response is None:
        raise SystemExit(f"{method.upper()} {template}: status {status} is not documented")
    response = resolve(response)
    content = response.get("content", {})
    media = content.get(content_type)
    return media and media.get("schema")


def check(method, template, path, status_expected=None, **kw):
    r = requests.request(method, base + path, headers={**H, **kw.pop("headers", {})}, **kw)
    if status_expected and r.status_code != status_expected:
        raise SystemExit(f"{method} {path}: expected {status_expected}, got {r.status_code}: {r.text[:300]}")
    ctype = r.headers.get("content-type", "").split(";")[0]
    if r.status_code == 404 and "no route" in r.text:
        raise SystemExit(f"{method} {path}: the server has no such route")
    schema = schema_for(template, method.lower(), r.status_code, ctype)
    if schema is not None and ctype == "application/json":
        schema = dict(schema)
        schema["components"] = spec["components"]
        OAS30Validator(schema).validate(r.json())
    elif schema is not None and ctype == "application/x-ndjson":
        item = dict(schema)
        item["components"] = spec["components"]
        for line in r.text.splitlines():
            OAS30Validator(item).validate(json.loads(line))
    checked.add((method.lower(), template))
    return r


check("GET", "/health", "/health", 200)
check("GET", "/metrics", "/metrics", 200)
sbx = check("POST", "/v1/sandboxes", "/v1/sandboxes", 201, json={"env": "empty", "metadata": {"k": "v"}}).json()
sid = sbx["id"]
check("POST", "/v1/sandboxes", "/v1/sandboxes", 400, json={"env": "empty", "memoryMB": 1})
check("POST", "/v1/sandboxes", "/v1/sandboxes", 404, json={"env": "no-such-env"})
check("GET", "/v1/sandboxes", "/v1/sandboxes", 200)
check("GET", "/v1/sandboxes/{id}", f"/v1/sandboxes/{sid}", 200)
check("GET", "/v1/sandboxes/{id}", "/v1/sandboxes/sbx_nope", 404)
check("POST", "/v1/sandboxes/{id}/timeout", f"/v1/sandboxes/{sid}/timeout", 200, json={"timeoutSeconds": 120})
events = check("GET", "/v1/sandboxes/{id}/events", f"/v1/sandboxes/{sid}/events", 200).json()
assert [e["kind"] for e in events][:2] == ["creating", "running"], events
check("GET", "/v1/sandboxes/{id}/events", "/v1/sandboxes/sbx_nope/events", 404)
out = check("POST", "/v1/sandboxes/{id}/exec", f"/v1/sandboxes/{sid}/exec", 200,
            json={"cmd": ["cat"], "stdin": base64.b64encode(b"hi").decode()})
assert any(json.loads(l).get("stdout") == base64.b64encode(b"hi").decode() for l in out.text.splitlines()), out.text
procs = check("GET", "/v1/sandboxes/{id}/processes", f"/v1/sandboxes/{sid}/processes", 200).json()
check("GET", "/v1/sandboxes/{id}/processes/{pid}/output", f"/v1/sandboxes/{sid}/processes/{procs[0]['id']}/output", 200)
check("GET", "/v1/sandboxes/{id}/processes/{pid}/output", f"/v1/sandboxes/{sid}/processes/no-such-tag/output", 404)
check("GET", "/v1/sandboxes/{id}/metrics", f"/v1/sandboxes/{sid}/metrics?start=0", 200)
check("GET", "/v1/sandboxes/{id}/metrics", f"/v1/sandboxes/{sid}/metrics?start=10&end=5", 400)
check("GET", "/v1/sandboxes/{id}/metrics", "/v1/sandboxes/sbx_nope/metrics", 404)
check("PUT", "/v1/sandboxes/{id}/network", f"/v1/sandboxes/{sid}/network", 200, json={"egress": ["10.0.0.0/8"]})
check("PUT", "/v1/sandboxes/{id}/network", f"/v1/sandboxes/{sid}/network", 400, json={"egress": ["10.0.0/8"]})
check("PUT", "/v1/sandboxes/{id}/network", f"/v1/sandboxes/{sid}/network", 200, json={})
check("POST", "/v1/sandboxes/{id}/processes/{pid}/signal", f"/v1/sandboxes/{sid}/processes/{procs[0]['id']}/signal",
      409, json={"signal": 15})
check("PUT", "/v1/sandboxes/{id}/files", f"/v1/sandboxes/{sid}/files?path=/code/x.txt&mode=600", 201, data=b"content")
check("GET", "/v1/sandboxes/{id}/files", f"/v1/sandboxes/{sid}/files?path=/code/x.txt", 200)
check("GET", "/v1/sandboxes/{id}/files", f"/v1/sandboxes/{sid}/files?path=/code/../etc/passwd", 400)
check("GET", "/v1/sandboxes/{id}/files/list", f"/v1/sandboxes/{sid}/files/list?path=/code&depth=2", 200)
check("GET", "/v1/sandboxes/{id}/files/stat", f"/v1/sandboxes/{sid}/files/stat?path=/code/x.txt", 200)
check("POST", "/v1/sandboxes/{id}/files/mkdir", f"/v1/sandboxes/{sid}/files/mkdir?path=/code/d/e", 201)
check("POST", "/v1/sandboxes/{id}/files/xattrs", f"/v1/sandboxes/{sid}/files/xattrs", 200, json={"path": "/code/x.txt", "set": {"user.k": "v"}})
check("POST", "/v1/sandboxes/{id}/files/xattrs", f"/v1/sandboxes/{sid}/files/xattrs", 400, json={"path": "/code/x.txt", "set": {"trusted.k": "v"}})
check("DELETE", "/v1/sandboxes/{id}/files", f"/v1/sandboxes/{sid}/files?path=/code/d&recursive=true", 204)
check("POST", "/v1/sandboxes/{id}/resume", f"/v1/sandboxes/{sid}/resume", 409)
check("POST", "/v1/sandboxes/{id}/fork", f"/v1/sandboxes/{sid}/fork", 400, json={"count": 0})
forks = check("POST", "/v1/sandboxes/{id}/fork", f"/v1/sandboxes/{sid}/fork", 201, json={"count": 1}).json()["sandboxes"]
check("POST", "/v1/sandboxes/{id}/pause", f"/v1/sandboxes/{forks[0]['id']}/pause", 200, json={"autoResume": False})
check("POST", "/v1/sandboxes/{id}/pause", f"/v1/sandboxes/{forks[0]['id']}/pause", 409)
check("POST", "/v1/sandboxes/{id}/resume", f"/v1/sandboxes/{forks[0]['id']}/resume", 200)
check("DELETE", "/v1/sandboxes/{id}", f"/v1/sandboxes/{forks[0]['id']}", 200)
env = check("POST", "/v1/sandboxes/{id}/snapshot", f"/v1/sandboxes/{sid}/snapshot", 201, json={"name": "spec-env"}).json()
check("POST", "/v1/sandboxes/{id}/snapshot", f"/v1/sandboxes/{sid}/snapshot", 400, json={"name": "Bad Name"})
check("GET", "/v1/envs", "/v1/envs", 200)
check("GET", "/v1/envs/{id}", f"/v1/envs/{env['id']}", 200)
check("GET", "/v1/envs/{id}", "/v1/envs/no-such-env", 404)
check("GET", "/v1/envs/{id}/tree", f"/v1/envs/{env['id']}/tree", 200)
check("DELETE", "/v1/envs/{id}", "/v1/envs/empty", 400)
check("DELETE", "/v1/envs/{id}", f"/v1/envs/{env['id']}", 200)

check("GET", "/v1/sandboxes/{id}/ports/{port}/{path}", f"/v1/sandboxes/{sid}/ports/8080/", 503)
check("GET", "/v1/sandboxes/{id}/pty", f"/v1/sandboxes/{sid}/pty", 400)  # no upgrade requested
import hashlib
blob = b"blob content"
digest = hashlib.sha256(blob).hexdigest()
assert check("POST", "/v1/blobs/missing", "/v1/blobs/missing", 200, json={"digests": [digest]}).json()["digests"] == [digest]
check("PUT", "/v1/blobs/{sha256}", f"/v1/blobs/{digest}", 400, data=b"other content")
check("PUT", "/v1/blobs/{sha256}", f"/v1/blobs/{digest}", 201, data=blob)
push = {"id": "spec-push", "from": "empty", "run": ["echo hi > /hi"], "files": [{"path": "a.txt", "mode": 420, "sha256": digest}]}
started = check("POST", "/v1/envs", "/v1/envs", 202, json=push).json()
check("GET", "/v1/builds/{id}/logs", f"/v1/builds/{started['build']['id']}/logs?follow=true", 200)
assert check("GET", "/v1/builds/{id}", f"/v1/builds/{started['build']['id']}?wait=true", 200).json()["status"] == "succeeded"
assert check("POST", "/v1/envs", "/v1/envs", 200, json=push).json()["env"]["id"] == started["envID"]
check("DELETE", "/v1/builds/{id}", f"/v1/builds/{started['build']['id']}", 409)  # already ended
assert check("GET", "/v1/builds/{id}", f"/v1/builds/{started['build']['id']}", 200).json()["config"]["run"] == push["run"]
listed = check("GET", "/v1/builds", f"/v1/builds?env={started['envID']}&limit=5", 200).json()
assert [b["id"] for b in listed] == [started["build"]["id"]], listed
check("GET", "/v1/builds", "/v1/builds?limit=0", 400)
assert check("GET", "/v1/whoami", "/v1/whoami", 200).json()["admin"] is True
check("POST", "/v1/envs/{id}/unpublish", f"/v1/envs/{started['envID']}/unpublish", 200)
check("POST", "/v1/envs/{id}/publish", f"/v1/envs/{started['envID']}/publish", 200)
check("POST", "/v1/envs/{id}/publish", "/v1/envs/empty/publish", 400)
check("POST", "/v1/envs", "/v1/envs", 400, json={**push, "files": [{"path": "../x", "mode": 420, "sha256": digest}]})


def docker_save_archive():
    """A one-layer image as `docker save` writes it."""
    import io
    import tarfile

    def tar(members):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return out.getvalue()
    layer = tar([("hello.txt", b"hello\n")])
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "WorkingDir": "/"},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["spec/image:v1"], "Layers": [layer_id + "/layer.tar"]}]).encode()
    return tar([("config.json", config), ("manifest.json", manifest), (layer_id + "/layer.tar", layer)])


archive = docker_save_archive()
archive_digest = hashlib.sha256(archive).hexdigest()
check("PUT", "/v1/blobs/{sha256}", f"/v1/blobs/{archive_digest}", 201, data=archive)
imported = check("POST", "/v1/envs/import", "/v1/envs/import", 201, json={"blob": archive_digest}).json()
assert imported["process"] == {"env": {"A": "1"}, "workdir": "/"} and imported["base"] == "scratch", imported
check("POST", "/v1/envs/import", "/v1/envs/import", 400, json={"blob": digest})  # uploaded, but not an archive
check("POST", "/v1/envs/import", "/v1/envs/import", 400, json={"blob": "0" * 64})  # never uploaded
vol = check("POST", "/v1/volumes", "/v1/volumes", 201, json={"name": "spec-vol", "sizeMB": 16}).json()
check("POST", "/v1/volumes", "/v1/volumes", 400, json={"name": "Bad Name"})
check("POST", "/v1/volumes", "/v1/volumes", 409, json={"name": "spec-vol", "sizeMB": 16})
check("GET", "/v1/volumes", "/v1/volumes", 200)
check("GET", "/v1/volumes/{name}", "/v1/volumes/spec-vol", 200)
check("GET", "/v1/volumes/{name}", "/v1/volumes/no-such-volume", 404)
check("PUT", "/v1/volumes/{name}/files", "/v1/volumes/spec-vol/files?path=/d/x.txt", 201, data=b"content")
check("GET", "/v1/volumes/{name}/files", "/v1/volumes/spec-vol/files?path=/d/x.txt", 200)
check("GET", "/v1/volumes/{name}/files", "/v1/volumes/spec-vol/files?path=/nope", 404)
check("GET", "/v1/volumes/{name}/files/list", "/v1/volumes/spec-vol/files/list?path=/d", 200)
check("GET", "/v1/volumes/{name}/files/stat", "/v1/volumes/spec-vol/files/stat?path=/d/x.txt", 200)
check("POST", "/v1/volumes/{name}/files/mkdir", "/v1/volumes/spec-vol/files/mkdir?path=/e/f&parents=true", 201)
check("POST", "/v1/volumes/{name}/files/mkdir", "/v1/volumes/spec-vol/files/mkdir?path=/e", 409)
mounted = check("POST", "/v1/sandboxes", "/v1/sandboxes", 201, json={"env": "empty", "volumes": [{"volume": "spec-vol", "path": "/v"}]}).json()
check("DELETE", "/v1/volumes/{name}", "/v1/volumes/spec-vol", 409)
check("DELETE", "/v1/sandboxes/{id}", f"/v1/sandboxes/{mounted['id']}", 200)
check("DELETE", "/v1/volumes/{name}/files", "/v1/volumes/spec-vol/files?path=/d", 204)
check("DELETE", "/v1/volumes/{name}", f"/v1/volumes/{vol['id']}", 204)
created = check("POST", "/v1/keys", "/v1/keys", 201, json={"name": "spec", "team": "spec"}).json()
check("GET", "/v1/keys", "/v1/keys", 200)
check("DELETE", "/v1/keys/{id}", f"/v1/keys/{created['key']['id']}", 200)
# This server is alone (no --role node): the fleet's routes answer 404 in the error shape.
check("GET", "/v1/nodes", "/v1/nodes", 404)
check("POST", "/v1/nodes/{id}/drain", "/v1/nodes/nope/drain", 404)
requests.get(base + "/v1/sandboxes", headers={"X-API-Key": created["secret"]}).status_code == 401 or sys.exit("revoked key still works")
check("DELETE", "/v1/sandboxes/{id}", f"/v1/sandboxes/{sid}", 200)

documented = {(m, p) for p, ops in spec["paths"].items() for m in ops if m in ("get", "post", "put", "delete")}
missing = documented - checked - {(m, "/v1/sandboxes/{id}/ports/{port}/{path}") for m in ("post", "put", "delete")}
if missing:
    raise SystemExit(f"documented but not exercised: {sorted(missing)}")
print(f"openapi.yaml: {len(checked)} operations checked against the live server")

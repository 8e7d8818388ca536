"""Sprout's code interpreter: the HTTP server the e2b-code-interpreter SDK talks to.

It listens on port 49999 inside the sandbox and keeps Jupyter kernels
("contexts"), one per context, each with its own state and working directory.

    GET    /health                   200 (the port opens once the default Python context is ready)
    POST   /execute                  {code, context_id?, language?, env_vars?} -> JSON lines
    GET    /contexts                 [{id, language, cwd}]
    POST   /contexts                 {language?, cwd?} -> {id, language, cwd}
    DELETE /contexts/{id}            204
    POST   /contexts/{id}/restart    204

An execution streams one JSON object per line: `stdout`/`stderr` ({text,
timestamp}), `result` (one key per format), `error` ({name, value,
traceback}), `number_of_executions`, and last `end_of_execution`. A client
that goes away (the SDK's timeout closes the connection) interrupts the
kernel; the context keeps its state and serves the next call.

Sandbox-wide environment variables are read from /run/sprout/env.json, which
Sprout writes when a sandbox is created with any: this server was started
when the env was built, before the sandbox existed.
"""

import json
import os
import select
import shutil
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import NAME, BadRequest, log
from process_context import BashContext, NodeContext
from python_context import Context
from sprout_kernel import release_free_memory

PORT = 49999
# Each language's context; javascript where Debian's nodejs is installed.
KINDS = {"python": Context, "bash": BashContext}
if shutil.which("node"):
    KINDS["javascript"] = NodeContext
LANGUAGES = tuple(KINDS)
ALIASES = {"python3": "python", "sh": "bash", "shell": "bash", "js": "javascript", "node": "javascript"}
MAX_BODY = 16 << 20


class Interpreter:
    def __init__(self):
        self.contexts = {}
        self.defaults = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.home = "/home/user" if os.path.isdir("/home/user") else os.environ.get("HOME", "/root")

    def warm(self):
        context = self.default("python")
        # Modules to load into the default kernel's memory (so into the env's
        # memory image), not into its namespace. None by default: each
        # sandbox restores that memory on create (numpy, pandas and pyplot
        # add about 110 MiB and 0.3 s), while a first `import pandas` costs
        # about a second only where it is used.
        preload = os.environ.get("SPROUT_INTERPRETER_PRELOAD", "").split()
        if preload:
            context.run_silently("def __sprout_warm():\n    import %s\n__sprout_warm(); del __sprout_warm" % ", ".join(preload), timeout=300)
        # Garbage and free heap pages would be saved into the image too.
        context.run_silently("__import__('sprout_kernel').release_free_memory()")
        release_free_memory()
        # E2B lists a JavaScript context from the start: it is here too, its
        # Node started on its first call (the env's memory image holds none).
        if "javascript" in KINDS:
            with self.lock:
                javascript = NodeContext("javascript", self.home, default=True)
                self.contexts[javascript.id] = javascript
                self.defaults["javascript"] = javascript
        self.ready.set()
        log("default python context ready:", context.id)

    def default(self, language):
        with self.lock:
            context = self.defaults.get(language)
            if context is not None:
                return context
            context = KINDS[language](language, self.home, default=True)
            context.start()
            self.contexts[context.id] = context
            self.defaults[language] = context
            return context

    def create(self, language, cwd):
        context = KINDS[language](language, cwd)
        if not isinstance(context, NodeContext):
            context.start()
        with self.lock:
            self.contexts[context.id] = context
        return context

    def find(self, context_id):
        with self.lock:
            context = self.contexts.get(context_id)
        if context is None:
            raise BadRequest(404, "context %s not found" % context_id)
        return context

    def remove(self, context_id):
        with self.lock:
            context = self.contexts.pop(context_id, None)
            if context is None:
                raise BadRequest(404, "context %s not found" % context_id)
            for language, default in list(self.defaults.items()):
                if default is context:
                    del self.defaults[language]
        context.shutdown()

    def list(self):
        with self.lock:
            return [c.describe() for c in self.contexts.values()]


def language_of(value):
    if value is None:
        return "python"
    if not isinstance(value, str):
        raise BadRequest(400, "language must be a string")
    name = ALIASES.get(value.lower(), value.lower())
    if name not in LANGUAGES:
        raise BadRequest(400, "language %r is not supported here (supported: %s)" % (value, ", ".join(sorted(LANGUAGES))))
    return name


def env_vars_of(value, field):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(400, "%s must be an object of strings" % field)
    out = {}
    for k, v in value.items():
        if not NAME.match(k):
            raise BadRequest(400, "%s: %r is not a valid variable name" % (field, k))
        if not isinstance(v, str):
            raise BadRequest(400, "%s: the value of %s must be a string" % (field, k))
        out[k] = v
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sprout-interpreter/1"
    interpreter = None  # set in main

    def log_message(self, fmt, *args):
        pass

    # Plumbing.
    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_empty(self, status=204):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def fail(self, status, message):
        self.send_json(status, {"code": status, "message": message})

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_BODY:
                    raise BadRequest(413, "request body over %d bytes" % MAX_BODY)
            raw = bytes(data)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise BadRequest(413, "request body over %d bytes" % MAX_BODY)
            raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise BadRequest(400, "the body is not valid JSON: %s" % e)
        if not isinstance(value, dict):
            raise BadRequest(400, "the body must be a JSON object")
        return value

    def route(self, method):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        try:
            if method == "GET" and parts == ["health"]:
                if self.interpreter.ready.is_set():
                    return self.send_json(200, {"status": "ok"})
                return self.fail(503, "the default context is starting")
            if method == "POST" and parts == ["execute"]:
                return self.execute(self.body())
            if parts == ["contexts"] and method == "GET":
                return self.send_json(200, self.interpreter.list())
            if parts == ["contexts"] and method == "POST":
                return self.create_context(self.body())
            if len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                self.interpreter.remove(parts[1])
                return self.send_empty()
            if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart" and method == "POST":
                self.interpreter.find(parts[1]).restart()
                return self.send_empty()
            raise BadRequest(404, "no route %s %s" % (method, path))
        except BadRequest as e:
            self.close_connection = e.status == 413
            return self.fail(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log("error:", traceback.format_exc())
            try:
                return self.fail(500, "%s: %s" % (type(e).__name__, e))
            except OSError:
                self.close_connection = True

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def create_context(self, body):
        language = language_of(body.get("language"))
        cwd = body.get("cwd") or self.interpreter.home
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise BadRequest(400, "cwd must be an absolute path")
        if not os.path.isdir(cwd):
            raise BadRequest(400, "cwd %s is not a directory" % cwd)
        context = self.interpreter.create(language, cwd)
        self.send_json(200, context.describe())

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest(400, "code must be a string")
        context_id = body.get("context_id")
        language = body.get("language")
        if context_id is not None and language is not None:
            raise BadRequest(400, "give context_id or language, not both")
        call_env = env_vars_of(body.get("env_vars"), "env_vars")
        if context_id is not None:
            if not isinstance(context_id, str):
                raise BadRequest(400, "context_id must be a string")
            context = self.interpreter.find(context_id)
        else:
            context = self.interpreter.default(language_of(language))

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sock = self.connection
        state = {"gone": False}

        def gone():
            if state["gone"]:
                return True
            try:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                    state["gone"] = True
            except OSError:
                state["gone"] = True
            return state["gone"]

        def emit(event):
            if state["gone"]:
                return
            line = json.dumps(event).encode() + b"\n"
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            except OSError:
                state["gone"] = True

        with context.lock:
            try:
                context.execute(code, call_env, emit, gone)
            except Exception as e:
                log("execution failed:", traceback.format_exc())
                emit({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": ""})
        emit({"type": "end_of_execution"})
        if state["gone"]:
            self.close_connection = True
            return
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def main():
    # Kernels run as root, as E2B's do: a context may work in any directory
    # (create_code_context(cwd="/root")). The default context starts in the
    # home of E2B's default user, where the env has one.
    # Started in the background, SIGINT may come ignored, and kernels and bash
    # would inherit that: interrupts need it to be a signal again.
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    interpreter = Interpreter()
    Handler.interpreter = interpreter
    # The port opens once the default context is warm: the env's readiness
    # check is `port:49999`, made from outside the sandbox (a check from
    # inside would leave a TCP connection in TIME_WAIT, which gVisor cannot
    # save into the memory image).
    interpreter.warm()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    log("listening on port", PORT)
    server.serve_forever()


if __name__ == "__main__":
    main()

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
import pwd
import queue
import re
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kernel_wire import Kernel
from sprout_kernel import release_free_memory

PORT = 49999
HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOX_ENV_FILE = "/run/sprout/env.json"
LANGUAGES = ("python", "bash")
ALIASES = {"python3": "python", "sh": "bash", "shell": "bash"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_BODY = 16 << 20

# Jupyter MIME types -> the SDK's result keys.
FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/vnd.sprout.data+json": "data",
    "application/vnd.sprout.chart+json": "chart",
}


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def shell_quote(value):
    return "'" + value.replace("'", "'\"'\"'") + "'"


def sandbox_env():
    """The sandbox's own environment variables, as Sprout wrote them."""
    try:
        with open(SANDBOX_ENV_FILE) as f:
            data = json.load(f)
        return {str(k): str(v) for k, v in data.items() if NAME.match(str(k))}
    except (OSError, ValueError, AttributeError):
        return {}


class Context:
    """A Python context: one Jupyter kernel, its own state and working directory."""

    def __init__(self, language, cwd, default=False):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.default = default
        self.lock = threading.Lock()
        self.applied_env = {}
        env = dict(os.environ)
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        env["PYTHONPATH"] = HERE + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # launch_kernel.py keeps the kernel off TCP (gVisor cannot save open
        # TCP connections, and the env's memory image holds the default
        # kernel with its channels open); no history database: a SQLite
        # write (and its thread) per call buys nothing here.
        argv = [sys.executable, os.path.join(HERE, "launch_kernel.py"),
                "--InteractiveShellApp.exec_lines=import sprout_kernel as __sprout; __sprout.setup(); del __sprout",
                "--HistoryManager.enabled=False"]
        self.kernel = Kernel(argv, cwd, env, self.id)

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def start(self):
        self.kernel.start()
        self.applied_env = {}

    def restart(self):
        with self.lock:
            self.kernel.restart()
            self.applied_env = {}

    def shutdown(self):
        self.kernel.shutdown()

    # Environment variables: the sandbox's stay; a call's are put back after it.
    def env_code(self, values):
        return "__import__('sprout_kernel').set_env(%r)" % (values,)

    def push_env_code(self, values):
        return "__import__('sprout_kernel').push_env(%r)" % (values,)

    def pop_env_code(self, values):
        return "__import__('sprout_kernel').pop_env()"

    def run_silently(self, code, timeout=30):
        """Runs setup code with no output and no execution count."""
        if not code:
            return
        msg_id = self.kernel.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = self.kernel.get_shell_msg(timeout=1)
            except queue.Empty:
                if not self.kernel.is_alive():
                    raise RuntimeError("the kernel died")
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return
        raise RuntimeError("the kernel did not answer within %d s" % timeout)

    def execute(self, code, call_env, emit, gone):
        """Runs `code`, calling `emit(event)` for each output; `gone()` says the client left."""
        wanted = sandbox_env()
        changed = {k: v for k, v in wanted.items() if self.applied_env.get(k) != v}
        if changed:
            self.run_silently(self.env_code(changed))
            self.applied_env.update(changed)
        if call_env:
            self.run_silently(self.push_env_code(call_env))
        try:
            self._execute(code, emit, gone)
        finally:
            if call_env and self.kernel.is_alive():
                try:
                    self.run_silently(self.pop_env_code(call_env))
                except Exception as e:
                    log("restoring env vars failed:", e)

    def _execute(self, code, emit, gone):
        msg_id = self.kernel.execute(code, store_history=True, allow_stdin=False)
        interrupted = False
        idle = False
        replied = False
        while not (idle and replied):
            if not interrupted and gone():
                log("client went away: interrupting context", self.id)
                self.kernel.interrupt()
                interrupted = True
            try:
                msg = self.kernel.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not replied:
                    replied = self._reply_arrived(msg_id)
                if not self.kernel.is_alive():
                    emit({"type": "error", "name": "KernelDied",
                          "value": "the kernel died while running this code; the context was restarted and its state is lost",
                          "traceback": ""})
                    self.kernel.restart()
                    self.applied_env = {}
                    return
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "status":
                idle = content.get("execution_state") == "idle"
                if idle and not replied:
                    replied = self._reply_arrived(msg_id, wait=5)
            elif kind == "stream":
                emit({"type": "stderr" if content.get("name") == "stderr" else "stdout",
                      "text": content.get("text", ""), "timestamp": time.time_ns()})
            elif kind == "execute_input":
                emit({"type": "number_of_executions", "execution_count": content.get("execution_count")})
            elif kind in ("execute_result", "display_data"):
                emit(result_event(content.get("data", {}), kind == "execute_result"))
            elif kind == "error":
                emit({"type": "error", "name": content.get("ename", ""), "value": content.get("evalue", ""),
                      "traceback": "\n".join(content.get("traceback", []))})

    def _reply_arrived(self, msg_id, wait=0):
        deadline = time.monotonic() + wait
        while True:
            try:
                reply = self.kernel.get_shell_msg(timeout=0.05)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return True
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return False


def bash_exports(values):
    return "".join("export %s=%s\n" % (k, shell_quote(v)) for k, v in values.items())


class BashContext:
    """A bash context: one long-lived bash, so variables, functions and the
    working directory carry over between calls. Each call's code is sourced
    from a file; markers on stdout and stderr tell where its output ends. An
    interrupt (the client went away) sends SIGINT, which returns from the
    sourced code; the shell lives on."""

    def __init__(self, language, cwd, default=False):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.default = default
        self.lock = threading.Lock()
        self.applied_env = {}
        self.process = None
        self.output = None
        self.count = 0

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def start(self):
        import subprocess

        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=self.cwd, env=dict(os.environ), start_new_session=True)
        self.output = queue.Queue()
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            threading.Thread(target=self._pump, args=(name, stream, self.output), daemon=True).start()
        self.applied_env = {}
        self.count = 0

    @staticmethod
    def _pump(name, stream, sink):
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            sink.put((name, data))
            if not data:
                return

    def restart(self):
        with self.lock:
            self.shutdown()
            self.start()

    def shutdown(self):
        import signal

        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            self.process.wait()

    def execute(self, code, call_env, emit, gone):
        import codecs
        import signal

        if self.process.poll() is not None:
            self.start()
        wanted = sandbox_env()
        changed = {k: v for k, v in wanted.items() if self.applied_env.get(k) != v}
        nonce = uuid.uuid4().hex
        marker = ("__SPROUT_DONE_%s_" % nonce).encode()
        path = "/tmp/.sprout-bash-%s.sh" % nonce
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(code)
            if not code.endswith("\n"):
                f.write("\n")
        self.count += 1
        emit({"type": "number_of_executions", "execution_count": self.count})
        push = "".join('if [ -n "${%s+x}" ]; then __sprout_had_%s=1; __sprout_old_%s="$%s"; else __sprout_had_%s=0; fi\n'
                       % (k, k, k, k, k) for k in call_env) + bash_exports(call_env)
        pop = "".join('if [ "$__sprout_had_%s" = 1 ]; then export %s="$__sprout_old_%s"; else unset %s; fi; unset __sprout_had_%s __sprout_old_%s\n'
                      % (k, k, k, k, k, k) for k in call_env)
        script = (bash_exports(changed) + push
                  + "trap 'return 130' INT\nsource %s < /dev/null\n__sprout_rc=$?\ntrap - INT\nrm -f %s\n" % (path, path) + pop
                  + "printf '%s%%d\\n' \"$__sprout_rc\"\nprintf '%s0\\n' >&2\n" % (marker.decode(), marker.decode()))
        try:
            self.process.stdin.write(script.encode())
            self.process.stdin.flush()
        except OSError:
            os.unlink(path)
            raise RuntimeError("the bash context ended")
        self.applied_env.update(changed)
        buffers = {"stdout": b"", "stderr": b""}
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in buffers}
        done = {"stdout": None, "stderr": None}
        interrupted = False

        def send(name, data, final=False):
            text = decoders[name].decode(data, final)
            if text:
                emit({"type": name, "text": text, "timestamp": time.time_ns()})

        while done["stdout"] is None or done["stderr"] is None:
            if not interrupted and gone():
                log("client went away: interrupting context", self.id)
                try:
                    os.killpg(self.process.pid, signal.SIGINT)
                except OSError:
                    pass
                interrupted = True
            try:
                name, data = self.output.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if not data:
                if self.process.poll() is not None or done[name] is None:
                    self.process.wait()
                    break
                continue
            buffer = buffers[name] + data
            at = buffer.find(marker)
            if at >= 0:
                end = buffer.find(b"\n", at)
                if end < 0:
                    buffers[name] = buffer
                    continue
                send(name, buffer[:at], final=True)
                done[name] = int(buffer[at + len(marker):end] or b"0")
                buffers[name] = b""
                continue
            cut = buffer.rfind(b"\n") + 1
            if len(buffer) - cut > 65536:
                cut = len(buffer) - len(marker)
            send(name, buffer[:cut])
            buffers[name] = buffer[cut:]
        if done["stdout"] is None:
            for name in buffers:
                send(name, buffers[name], final=True)
            try:
                os.unlink(path)
            except OSError:
                pass
            emit({"type": "error", "name": "ContextEnded", "traceback": "",
                  "value": "the bash context ended (exit status %s); it was restarted and its state is lost" % self.process.returncode})
            self.start()
            return
        status = done["stdout"]
        if status != 0:
            emit({"type": "error", "name": "ExitCodeError", "value": "exit status %d" % status, "traceback": ""})


def result_event(data, main):
    event = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        key = FORMATS.get(mime)
        if key:
            event[key] = value
        else:
            extra[mime] = value
    if extra:
        event["extra"] = extra
    return event


class Interpreter:
    def __init__(self):
        self.contexts = {}
        self.defaults = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.home = os.environ.get("HOME", "/root")

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
        self.ready.set()
        log("default python context ready:", context.id)

    def default(self, language):
        with self.lock:
            context = self.defaults.get(language)
            if context is not None:
                return context
            context = (Context if language == "python" else BashContext)(language, self.home, default=True)
            context.start()
            self.contexts[context.id] = context
            self.defaults[language] = context
            return context

    def create(self, language, cwd):
        context = (Context if language == "python" else BashContext)(language, cwd)
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


def drop_privileges():
    """Runs as `user` (E2B's default user) where the env has one."""
    if os.getuid() != 0:
        return
    try:
        account = pwd.getpwnam("user")
    except KeyError:
        return
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.environ.update(HOME=account.pw_dir, USER="user", LOGNAME="user")
    os.chdir(account.pw_dir)


def main():
    drop_privileges()
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

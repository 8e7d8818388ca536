"""Contexts that are a process of the server's own: a bash, and a Node.js
that runs JavaScript (js_runner.js)."""
import codecs
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

from common import log, result_event, sandbox_env, shell_quote

HERE = os.path.dirname(os.path.abspath(__file__))


def bash_exports(values):
    return "".join("export %s=%s\n" % (k, shell_quote(v)) for k, v in values.items())


class ProcessContext:
    """A context that is one long-lived process of the server's: its
    output is read by two threads into a queue; `restart` starts it again."""

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

    def argv(self):
        raise NotImplementedError

    def start(self, pass_fds=(), env=None):
        environment = dict(os.environ)
        environment.update(env or {})
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=self.cwd, env=environment, start_new_session=True, pass_fds=pass_fds)
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
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            self.process.wait()

    def interrupt(self):
        try:
            os.killpg(self.process.pid, signal.SIGINT)
        except OSError:
            pass


    def read_until_markers(self, marker, emit, gone):
        """Emits stdout and stderr as they come until each carries `marker`
        (followed by a number and a newline), sending SIGINT once if the
        client goes away. Returns the number after stdout's marker, or None
        if the process ended first (what it printed is emitted either way)."""
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
                self.interrupt()
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
        return done["stdout"]

    def ended(self, emit):
        emit({"type": "error", "name": "ContextEnded", "traceback": "",
              "value": "the %s context ended (exit status %s); it was restarted and its state is lost" % (self.language, self.process.poll())})
        self.shutdown()
        self.start()


class BashContext(ProcessContext):
    """A bash context: one long-lived bash, so variables, functions and the
    working directory carry over between calls. Each call's code is sourced
    from a file; markers on stdout and stderr tell where its output ends. An
    interrupt (the client went away) sends SIGINT, which returns from the
    sourced code; the shell lives on."""

    def argv(self):
        return ["bash", "--noprofile", "--norc"]

    def execute(self, code, call_env, emit, gone):
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
        status = self.read_until_markers(marker, emit, gone)
        if status is None:
            try:
                os.unlink(path)
            except OSError:
                pass
            self.ended(emit)
            return
        if status != 0:
            emit({"type": "error", "name": "ExitCodeError", "value": "exit status %d" % status, "traceback": ""})


class NodeContext(ProcessContext):
    """A JavaScript context: one Node.js (Debian's nodejs) running
    js_runner.js, which evaluates each call's code in one persistent V8
    context (so variables and functions carry over). Its result and error
    travel on a pipe of their own; markers on stdout and stderr tell where
    a call's output ends, as in a bash context. Started on its first call:
    the env's memory image holds no Node."""

    def argv(self):
        return ["node", os.path.join(HERE, "js_runner.js")]

    def start(self):
        read, write = os.pipe()
        try:
            super().start(pass_fds=(write,), env={"SPROUT_JS_FD": str(write)})
        finally:
            os.close(write)
        # Read on a thread of its own, so a large result never blocks the runner.
        self.events = queue.Queue()
        threading.Thread(target=self._read_events, args=(os.fdopen(read, "rb"), self.events), daemon=True).start()

    @staticmethod
    def _read_events(stream, sink):
        with stream:
            for line in stream:
                try:
                    sink.put(json.loads(line))
                except ValueError:
                    continue
        sink.put(None)

    def execute(self, code, call_env, emit, gone):
        if self.process is None or self.process.poll() is not None:
            self.start()
        wanted = sandbox_env()
        changed = {k: v for k, v in wanted.items() if self.applied_env.get(k) != v}
        self.count += 1
        emit({"type": "number_of_executions", "execution_count": self.count})
        marker = "__SPROUT_DONE_%s_" % uuid.uuid4().hex
        request = json.dumps({"code": code, "set": changed, "call": call_env, "marker": marker}) + "\n"
        try:
            self.process.stdin.write(request.encode())
            self.process.stdin.flush()
        except OSError:
            raise RuntimeError("the javascript context ended")
        self.applied_env.update(changed)
        if self.read_until_markers(marker.encode(), emit, gone) is None:
            self.ended(emit)
            return
        # The runner writes its events before its markers: they have come or are coming.
        while True:
            try:
                event = self.events.get(timeout=30)
            except queue.Empty:
                event = None
            if event is None:
                break
            kind = event.get("type")
            if kind == "result":
                emit(result_event({"text/plain": event.get("text", "")}, True))
            elif kind == "error":
                emit({"type": "error", "name": event.get("name") or "Error", "value": event.get("value", ""),
                      "traceback": event.get("traceback", "")})
            elif kind == "done":
                return
        self.ended(emit)

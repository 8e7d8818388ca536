"""A Python context: one IPython kernel, spoken to over ZeroMQ by kernel_wire."""
import os
import queue
import sys
import threading
import time
import uuid

from common import log, result_event, sandbox_env
from kernel_wire import Kernel

HERE = os.path.dirname(os.path.abspath(__file__))


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


"""A Jupyter kernel and its client, in the standard library alone.

The interpreter's server talks to its kernels over the Jupyter messaging
protocol, carried by ZeroMQ. jupyter_client (with pyzmq, tornado, traitlets
and dateutil) made the server process about 45 MiB bigger, and every
sandbox restores the server's memory on create. This module speaks what the
server needs of it directly:

- ZMTP 3.0 (ZeroMQ's wire protocol, NULL security) over the Unix sockets an
  ipc-transport kernel binds: a DEALER to the shell ROUTER and a SUB to the
  IOPub PUB. No control, stdin or heartbeat channel: interrupts are signals
  (the kernel's `interrupt_mode`), input is never allowed, and the kernel
  is a child process whose exit the server sees.
- Jupyter messages (protocol 5.3): the delimiter, the HMAC-SHA256 signature
  of header, parent header, metadata and content, then those four as JSON.

A kernel is launched as jupyter_client would: its own session (so an
interrupt reaches the processes it started), a connection file written
before it starts.
"""

import hashlib
import hmac
import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import time
import uuid
from datetime import datetime, timezone

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
# Port numbers of an ipc kernel are only suffixes of its socket paths.
PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


class WireError(Exception):
    pass


def _greeting():
    # Signature (0xFF, 8 bytes of padding, 0x7F), version 3.0, mechanism
    # NULL padded to 20 bytes, as-server 0, 31 bytes of filler.
    return b"\xff" + b"\x00" * 7 + b"\x01" + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def _frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def _ready_command(socket_type):
    properties = b""
    for name, value in ((b"Socket-Type", socket_type), (b"Identity", b"")):
        properties += bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return _frame(b"\x05READY" + properties, command=True)


class Connection:
    """One ZMTP connection to a libzmq socket bound at a Unix path."""

    def __init__(self, path, socket_type, deadline, alive):
        self.buffer = bytearray()
        self.parts = []
        # Set when the kernel's end went away (the kernel died): sends are
        # dropped and reads time out, so the caller sees a dead kernel
        # through Kernel.is_alive() and restarts it.
        self.closed = False
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if not alive():
                    raise WireError("the kernel exited before it was listening")
                if time.monotonic() > deadline:
                    raise WireError("the kernel did not listen on %s in time" % path)
                time.sleep(0.01)
        self.sock.sendall(_greeting())
        greeting = self._read_exactly(64, deadline)
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
            raise WireError("%s does not speak ZMTP 3" % path)
        if greeting[12:32].rstrip(b"\x00") != b"NULL":
            raise WireError("%s wants a security mechanism other than NULL" % path)
        self.sock.sendall(_ready_command(socket_type))
        command = self._read_frame(deadline)
        if command is None or not command[1] or not command[2].startswith(b"\x05READY"):
            raise WireError("%s did not answer the handshake" % path)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, parts):
        if self.closed:
            return
        data = b"".join(_frame(part, more=i < len(parts) - 1) for i, part in enumerate(parts))
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def recv(self, timeout):
        """The next whole message (a list of frames), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._read_frame(deadline)
            if frame is None:
                return None
            more, command, body = frame
            if command:
                continue  # PING and the like: nothing the client needs
            self.parts.append(body)
            if not more:
                parts, self.parts = self.parts, []
                return parts

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if self.closed:
            time.sleep(min(remaining, 0.05))  # no busy loop while the caller notices
            return False
        readable, _, _ = select.select([self.sock], [], [], remaining)
        if not readable:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def _read_exactly(self, count, deadline):
        while len(self.buffer) < count:
            if not self._fill(deadline):
                raise WireError("the kernel closed its socket" if self.closed else "the kernel did not answer in time")
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def _read_frame(self, deadline):
        """(more, command, body) of the next frame, or None if none came by `deadline`."""
        while True:
            if len(self.buffer) >= 2:
                flags = self.buffer[0]
                header = 9 if flags & 2 else 2
                if len(self.buffer) >= header:
                    size = struct.unpack(">Q", self.buffer[1:9])[0] if flags & 2 else self.buffer[1]
                    if len(self.buffer) >= header + size:
                        body = bytes(self.buffer[header:header + size])
                        del self.buffer[:header + size]
                        return bool(flags & 1), bool(flags & 4), body
            if not self._fill(deadline):
                return None


class Kernel:
    """A kernel process and the shell and IOPub channels to it."""

    def __init__(self, argv, cwd, env, name):
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.name = name
        self.process = None
        self.shell = None
        self.iopub = None
        self.base = None
        self.key = b""
        self.session = uuid.uuid4().hex

    def start(self, timeout=120):
        self.base = "/tmp/.sprout-kernel-%s-%s" % (self.name, uuid.uuid4().hex[:8])
        self.key = uuid.uuid4().hex.encode()
        connection_file = self.base + ".json"
        info = dict(PORTS, transport="ipc", ip=self.base, key=self.key.decode(),
                    signature_scheme="hmac-sha256", kernel_name="sprout-python")
        fd = os.open(connection_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        self.process = subprocess.Popen(self.argv + ["-f", connection_file], cwd=self.cwd, env=self.env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            self.shell = Connection("%s-%d" % (self.base, PORTS["shell_port"]), b"DEALER", deadline, self.is_alive)
            self.iopub = Connection("%s-%d" % (self.base, PORTS["iopub_port"]), b"SUB", deadline, self.is_alive)
            self.iopub.send([b"\x01"])  # subscribe to every topic (ZMTP 3.0 form)
            self._wait_for_ready(deadline)
        except Exception:
            self.shutdown()
            raise

    def _wait_for_ready(self, deadline):
        # As jupyter_client does: a kernel_info reply says the shell serves;
        # an IOPub message after it says the subscription has taken.
        while True:
            msg_id = self._send(self.shell, "kernel_info_request", {})
            try:
                while True:
                    reply = self.get_shell_msg(timeout=1)
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
                self.get_iopub_msg(timeout=0.2)
                return
            except queue.Empty:
                pass
            if not self.is_alive():
                raise WireError("the kernel exited while starting (exit status %s)" % self.process.returncode)
            if time.monotonic() > deadline:
                raise WireError("the kernel did not become ready in time")

    def _send(self, connection, msg_type, content):
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "username": "sprout", "session": self.session,
                  "date": datetime.now(timezone.utc).isoformat(), "version": PROTOCOL_VERSION}
        parts = [json.dumps(part).encode() for part in (header, {}, {}, content)]
        signature = hmac.new(self.key, b"".join(parts), hashlib.sha256).hexdigest().encode()
        connection.send([DELIMITER, signature] + parts)
        return msg_id

    def _recv(self, connection, timeout):
        deadline = time.monotonic() + timeout
        while True:
            parts = connection.recv(max(0.0, deadline - time.monotonic()))
            if parts is None:
                raise queue.Empty
            try:
                at = parts.index(DELIMITER)
            except ValueError:
                continue
            signature, fields = parts[at + 1], parts[at + 2:at + 6]
            if len(fields) < 4:
                continue
            expected = hmac.new(self.key, b"".join(fields), hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(signature, expected):
                continue  # not from our kernel: dropped, as jupyter_client would
            header, parent, metadata, content = (json.loads(field) for field in fields)
            return {"header": header, "parent_header": parent, "metadata": metadata,
                    "content": content, "msg_type": header.get("msg_type")}

    def execute(self, code, silent=False, store_history=True, allow_stdin=False):
        return self._send(self.shell, "execute_request", {
            "code": code, "silent": silent, "store_history": store_history,
            "user_expressions": {}, "allow_stdin": allow_stdin, "stop_on_error": True})

    def get_shell_msg(self, timeout):
        return self._recv(self.shell, timeout)

    def get_iopub_msg(self, timeout):
        return self._recv(self.iopub, timeout)

    def is_alive(self):
        return self.process is not None and self.process.poll() is None

    def interrupt(self):
        if self.is_alive():
            self._signal(signal.SIGINT)

    def _signal(self, signum):
        # The kernel's session: what its code started gets the signal too.
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def shutdown(self):
        for connection in (self.shell, self.iopub):
            if connection is not None:
                connection.close()
        self.shell = self.iopub = None
        if self.process is not None:
            self._signal(signal.SIGKILL)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.base:
            for suffix in [".json"] + ["-%d" % port for port in PORTS.values()]:
                try:
                    os.unlink(self.base + suffix)
                except FileNotFoundError:
                    pass

    def restart(self, timeout=120):
        self.shutdown()
        self.start(timeout)

"""Starts an IPython kernel for Sprout's code interpreter.

What differs from `python3 -m ipykernel_launcher`:
- The IOPub thread gets no "pipe", a ZMQ socket listening on TCP 127.0.0.1
  that carries the output of forked child processes. gVisor cannot save that
  listener into a memory image, and the env's image holds the default
  kernel. (What forked children print goes to the kernel's own stdout.)
- No debugger (debugpy) and no jedi completion: together about 40 MiB of
  the kernel's memory, and every sandbox restores that memory on create.
"""
import sys

sys.modules["debugpy"] = None
sys.modules["jedi"] = None

import ipykernel.iostream as iostream  # noqa: E402

_init = iostream.IOPubThread.__init__


def _without_pipe(self, socket, pipe=False):
    _init(self, socket, pipe=False)


iostream.IOPubThread.__init__ = _without_pipe

from ipykernel.kernelapp import launch_new_instance  # noqa: E402

launch_new_instance()

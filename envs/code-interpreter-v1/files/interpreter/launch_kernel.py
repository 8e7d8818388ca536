"""Starts an IPython kernel for Sprout's code interpreter.

What differs from `python3 -m ipykernel_launcher`:
- The IOPub thread gets no "pipe", a ZMQ socket listening on TCP 127.0.0.1
  that carries the output of forked child processes. gVisor cannot save that
  listener into a memory image, and the env's image holds the default
  kernel. (What forked children print goes to the kernel's own stdout.)
- No debugger (debugpy) and no jedi completion: together about 40 MiB of
  the kernel's memory, and every sandbox restores that memory on create.
- No `IPython.embed`: `import IPython` imports it, and with it the terminal
  shell's prompt_toolkit (116 modules, about 7 MiB of the image), which a
  kernel never uses.
"""
import sys
import types

sys.modules["debugpy"] = None
sys.modules["jedi"] = None


def _no_embed(*args, **kwargs):
    raise RuntimeError("IPython.embed() is not available in a Sprout kernel")


_embed = types.ModuleType("IPython.terminal.embed")
_embed.embed = _no_embed
sys.modules["IPython.terminal.embed"] = _embed

import ipykernel.iostream as iostream  # noqa: E402

_init = iostream.IOPubThread.__init__


def _without_pipe(self, socket, pipe=False):
    _init(self, socket, pipe=False)


iostream.IOPubThread.__init__ = _without_pipe

from ipykernel.kernelapp import launch_new_instance  # noqa: E402

launch_new_instance()

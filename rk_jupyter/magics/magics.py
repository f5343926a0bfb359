"""``%rkernel`` and ``%%rkernel``: the IPython face of ``Connection``."""

from __future__ import annotations

import atexit
import shlex
import sys
from typing import Any, TextIO

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ..client.status import render_status, status_rows
from .connection import Connection, RKernelError
from .target import CONNECT_USAGE, connect_config, transport_settings

USAGE = f"{CONNECT_USAGE}\n       %rkernel status | %rkernel disconnect"
NOT_CONNECTED = "use %rkernel connect NAME first"


class IPythonOutput:
    """An evaluation's output as IPython shows a cell's: streams, rich displays, input()
    (an ``rk_jupyter.client.Output``)."""

    def stdout(self, text: str) -> None:
        _write_line(sys.stdout, text)

    def stderr(self, text: str) -> None:
        _write_line(sys.stderr, text)

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        display(bundle, raw=True)

    def read_input(self, prompt: str) -> str:
        try:
            return input(prompt)
        except StdinNotImplementedError:
            self.stderr("Input[] needs a front end that accepts input; answering an empty string")
            return ""

    def next_line(self, line: int) -> None:
        """IPython keeps its own execution count."""


def _write_line(stream: TextIO, text: str) -> None:
    """One write and a flush, so that the line goes out now and as one stream message."""
    stream.write(text + "\n")  # one line each: Print["a\n"] shows a blank line
    stream.flush()


@magics_class
class RKernelMagics(Magics):
    """One connection per IPython session; it ends with ``%rkernel disconnect`` or at exit."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.connection: Connection | None = None
        atexit.register(self._disconnect)

    @line_magic("rkernel")
    def rkernel_line(self, line: str) -> None:
        """Connect IPython to a Wolfram Language engine, show the link, or disconnect.

            %rkernel connect NAME          the engine of kernelspec rk-NAME (see rk-jupyter list)
            %rkernel connect --host [USER@]HOST[:PORT] [--OPTION VALUE ...]
                                           an engine on another host (the ssh transport); the
                                           options are rk-jupyter add's (--engine, --identity,
                                           --proxy-jump, ...) and any kernelspec config key
                                           (--connect-timeout 5); with NAME they override its
            %rkernel status                the link: endpoint, engine, round trip, traffic
            %rkernel disconnect            end the engine and its agent

        Then evaluate cells with %%rkernel.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{exc}\n{USAGE}") from None
        command, args = (words[0], words[1:]) if words else ("", [])
        if command == "connect":
            self._connect(args)
        elif command == "status" and not args:
            connection = self._live()
            rows = status_rows(connection.client if connection else None, NOT_CONNECTED)
            if connection is not None:
                rows.insert(0, ("kernelspec", connection.label))
            display(render_status(rows), raw=True)
        elif command == "disconnect" and not args:
            label = self.connection.label if self.connection else None
            self._disconnect()
            print(f"disconnected from {label}" if label else "not connected")
        else:
            raise UsageError(USAGE)

    @magic_arguments()
    @argument("-o", "--output", metavar="VAR",
              help="store the result, converted from WXF, in the Python variable VAR "
                   "(lists, dicts, numbers, strings; numpy arrays for packed arrays) "
                   "instead of displaying it")
    @cell_magic("rkernel")
    def rkernel_cell(self, line: str, cell: str) -> None:
        """Evaluate the cell as Wolfram Language on the engine of ``%rkernel connect``.

        Print output and messages stream to stdout and stderr as they come; the result shows
        as text, TeX or SVG.  Interrupting the cell interrupts the engine, which keeps its
        definitions.
        """
        args = parse_argstring(self.rkernel_cell, line)
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a Python variable name, not {args.output!r}")
        connection = self._live()
        if connection is None:
            raise RKernelError(f"not connected: {NOT_CONNECTED}")
        value = connection.evaluate(cell, IPythonOutput(), expression=args.output is not None)
        if args.output is not None:
            self.shell.user_ns[args.output] = value

    def _connect(self, args: list[str]) -> None:
        """Open the new connection, then end the old one: a failed connect changes nothing."""
        label, config = connect_config(args)
        connection = Connection.open(label, transport_settings(config))
        if self.connection is not None:
            print(f"disconnecting from {self.connection.label}")
            self._disconnect()
        self.connection = connection
        info = connection.client.engine_info
        print(f"connected to {label}: {info.get('name', '')} {info.get('version', '')} "
              f"({connection.client.endpoint.description})")

    def _live(self) -> Connection | None:
        """The connection, unless it has ended (its engine died or its link broke)."""
        if self.connection is not None and self.connection.closed:
            self.connection = None
        return self.connection

    def _disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

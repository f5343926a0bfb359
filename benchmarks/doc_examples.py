"""Mathics3's own documentation examples as a workload: collected, filtered, evaluated by
Mathics3 itself and through a Jupyter kernel, and compared.

Shared by the fidelity test (``tests/test_fidelity.py``: rk-local must give what Mathics3
gives) and the benchmark (``benchmarks/bench_docs.py``: how much longer rk-local takes), so
that both speak of the same workload.

**Collection** (``documentation_entries``).  Mathics3's documentation
(``MathicsMainDocumentation``, the collection its own doc tests run) in document order:
part → chapter → section → subsection, a chapter's own examples before its first section.  An
entry is a section or subsection (a builtin's page); an example is one line of code; examples
marked ignored (``X>``, ``S>`` in a sandbox) are left out.  Mathics3 10.0.1: 4,487 examples
in 1,523 entries.

**Filter** (``excluded``: the reason, or None).  An example is left out when what it gives can
differ between two runs of Mathics3 itself, depends on the machine rather than the language,
waits for a user, ends the session, or touches files; the rule is that its code names one of
these (a whole word, ``*`` standing for any letters):

- randomness: ``Random*``, ``SeedRandom``, ``$RandomState``, ``CreateUUID``;
- dates, clocks and timings: ``Date*``, ``*Date``, ``Now``, ``Today``, ``Tomorrow``,
  ``Yesterday``, ``AbsoluteTime``, ``SessionTime``, ``TimeUsed``, ``TimeZone``, ``$TimeZone``,
  ``Timing``, ``AbsoluteTiming``, ``RepeatedTiming``, ``TimeConstrained``, ``TimeRemaining``,
  ``Pause``, ``TraceBuiltins``, ``$TraceBuiltins``, ``PrintTrace`` (tables with a column of ms);
- the machine, processes and the session: ``Run``, ``RunProcess``, ``StartProcess``,
  ``Environment``, ``SetEnvironment``, ``$ProcessID``, ``$ParentProcessID``, ``$UserName``,
  ``$SessionID``, ``$CommandLine``, ``$ScriptCommandLine``, ``$ProcessorCount``,
  ``$SystemMemory``, ``MemoryAvailable``, ``MemoryInUse``, ``MaxMemoryUsed``,
  ``MemoryConstrained``, ``$Machine``, ``$MachineName``, ``$MachineType``, ``$MachineID``,
  ``$System*``, ``$OperatingSystem``, ``$Version*``, ``$ReleaseNumber``, ``Share``;
- files, directories, streams and the network: ``Open*``, ``Close``, ``Read*``, ``Write*``,
  ``Put``, ``PutAppend``, ``Get``, ``>>``, ``>>>`` and ``<<`` outside strings, ``Needs``,
  ``Import``, ``Export`` (not ``ExportString``), ``Find``, ``Skip``, ``Streams``, ``File*``,
  ``*File``, ``*Directory*``, ``$*Directory``, ``$Path``, ``ExampleData``, ``URL*``,
  ``Install``, ``LoadModule``, ``SystemOpen``;
- an order that changes from run to run of Mathics3 itself (a Python set's, which depends on
  the hash seed): ``$PrintForms``, ``$OutputForms``;
- input from a user: ``Input``, ``InputString``, ``$Input``;
- every name or context there is: ``Names["System`*"]``, ``Names["*"]``, ``Contexts[]`` (the
  kernel defines front-end functions Mathics3 has not, such as ``Input``, and a context of
  its own: an intended difference, see README.md);
- the end of the session: ``Quit``, ``Exit``;

and whole chapters whose subject is the machine: "Date and Time", "Global System
Information", "Directories and Directory Operations", "File Operations", "File Formats",
"Kernel Sessions".  Mathics3 10.0.1: 4,027 examples remain, in 1,069 entries.

**Selection** (``select_examples``).  Whole entries, so that an example finds the state its
page's earlier examples built: every ``STRIDE``-th (6th) entry in document order among those
with an example left, starting with the first, plus every entry of the Manual's tutorial
chapters (whose examples build on each other).  Each entry starts with the cell ``RESET``:
Mathics3's own doc tests start each entry without user definitions, and without it the
definitions of one page (``f`` made Orderless and Flat) send later pages into minutes of
pattern matching.  Mathics3 10.0.1: 193 entries, 921 examples + 193 reset cells = 1,114
cells, from 44 chapters.  Both sides evaluate exactly these cells in this order, each from a
fresh session.

**Reference** (``Reference``: all cells, while the caller does something else;
``ReferenceSession``: one cell at a time).  Mathics3 itself in a subprocess (stdin /dev/null,
so that nothing waits for a terminal; its own process group): one ``MathicsSession``
evaluating each cell through Mathics3's main loop (``evaluate_as_in_cli``, as its doc tests
and command line do) — the result's OutputForm text as Mathics3 formats it, messages
(``Symbol::tag: text``) and Print lines in order, and the seconds the loop took; a per-cell
timeout (SIGALRM, which Mathics3 turns into an abort) and an overall one.

**Through a kernel** (``run_kernel``; ``KernelSession``: one cell at a time).  One cell per
example through jupyter_client, the kernel started by ``KernelManager`` as JupyterLab does:
text/plain of the execute_result (or of the help pager's payload), stdout streams (Print) and
stderr streams (messages) in order, an error reply's ename and evalue, and the seconds from
execute_request to the reply and the idle status; a cell still running after the timeout is
interrupted and marked timed out.

**Comparison** (``compare``).  Equal after ``normalise_reference``/``normalise_kernel``,
which apply only the intended differences README.md lists ("Differences from Mathics3 itself
(intended)"); every other difference, and every timeout, is reported with the cell, its entry,
what Mathics3 gave and what the kernel gave.

``python benchmarks/doc_examples.py --list`` prints the selection (``--stride N`` for
another); the reference processes run this file with ``--reference`` or ``--serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

#: Every STRIDE-th doc entry (that has an example left after the filter) is selected.
STRIDE = 6
#: Per-example bound, reference and kernel alike (the slowest selected cell: ~2-5 s).
EXAMPLE_TIMEOUT = 30.0
START_TIMEOUT = 120.0

#: Chapters of the Manual whose examples build on each other: taken whole.
TUTORIAL_CHAPTERS = frozenset({"Language Tutorial", "Further Tutorial Examples"})
#: Chapters about the machine, not the language.
EXCLUDED_CHAPTERS = frozenset({
    "Date and Time", "Global System Information", "Directories and Directory Operations",
    "File Operations", "File Formats", "Kernel Sessions",
})

#: The cell that starts each doc entry: Mathics3's doc tests start each entry with no user
#: definitions (``reset_user_definitions``); a cell can clear Global` symbols and the main
#: loop's hooks, which is what the examples define (without it, ``f`` made Orderless, Flat and
#: OneIdentity on earlier pages sends later pages' pattern matching into minutes).
RESET = 'Unprotect["Global`*"]; ClearAll["Global`*"]; ClearAll[$Pre, $Post, $PrePrint];'

_WORD = r"(?<![\w$`])(?:{})(?![\w$`])"
#: (reason, pattern): the filter's rules, in the order the docstring gives them.
RULES: list[tuple[str, re.Pattern[str]]] = [
    (reason, re.compile(_WORD.format(words))) for reason, words in [
        ("random", r"Random\w*|SeedRandom|\$RandomState|CreateUUID"),
        ("dates, clocks or timings", r"Date\w*|\w+Date|Now|Today|Tomorrow|Yesterday|"
                                     r"AbsoluteTime|SessionTime|TimeUsed|\$?TimeZone|Timing|"
                                     r"AbsoluteTiming|RepeatedTiming|TimeConstrained|"
                                     r"TimeRemaining|Pause|\$?TraceBuiltins|PrintTrace"),
        ("machine or session", r"Run|RunProcess|StartProcess|Environment|SetEnvironment|"
                               r"\$ProcessID|\$ParentProcessID|\$MachineName|\$UserName|"
                               r"\$SessionID|\$CommandLine|\$ScriptCommandLine|"
                               r"\$ProcessorCount|\$SystemMemory|MemoryAvailable|MemoryInUse|"
                               r"MaxMemoryUsed|MemoryConstrained|\$Machine|\$MachineName|"
                               r"\$MachineType|\$MachineID|\$System\w*|\$OperatingSystem|"
                               r"\$Version\w*|\$ReleaseNumber|Share"),
        ("files or network", r"Open\w*|Close|Read\w*|Write\w*|Put|PutAppend|Get|Needs|Import|"
                             r"Export|Find|Skip|Streams|File\w*|\w+File|\w*Directory\w*|"
                             r"\$\w*Directory|\$Path|ExampleData|URL\w*|Install|LoadModule|"
                             r"SystemOpen"),
        ("order from a Python set", r"\$PrintForms|\$OutputForms"),
        ("user input", r"Input|InputString|\$Input"),
        ("ends the session", r"Quit|Exit"),
    ]
]
#: Put (>>, >>>) and Get (<<) as operators, outside strings.
_FILE_OPERATORS = re.compile(r">>|<<")
#: Every name of System` or of every context, every context: the kernel adds front-end
#: functions (Input, ...) and a context (README: "Differences from Mathics3 itself").
_ALL_NAMES = re.compile(r'Names\[\s*"(System`)?\*"|Contexts\[\s*\]')
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


@dataclass(frozen=True)
class Example:
    """One documentation example: its doc entry ("Chapter / Section[ / Subsection]") and
    its code."""

    entry: str
    code: str


@dataclass
class Outcome:
    """What one example gave: the result's text (None: no result, as after ``;``), Print lines
    and messages in order (``["print" | "message", text]``), the error a kernel replied with
    (``[ename, evalue]``), whether the example was cut off at the timeout, its seconds, and
    the MIME types of a kernel's result (what it cost to render)."""

    result: str | None = None
    outs: list[list[str]] = field(default_factory=list)
    error: list[str] | None = None
    aborted: bool = False  # the reference's evaluation was aborted (its result is $Aborted)
    syntax: bool = False  # the reference could not parse the example
    exception: str | None = None  # the Python exception the reference's evaluation raised
    timed_out: bool = False
    seconds: float = 0.0
    formats: list[str] = field(default_factory=list)  # the MIME types of a kernel's result


def excluded(code: str) -> str | None:
    """Why the filter leaves ``code`` out (see the module's docstring), or None."""
    for reason, pattern in RULES:
        if pattern.search(code):
            return reason
    if _FILE_OPERATORS.search(_STRING.sub('""', code)):
        return "files or network"
    if _ALL_NAMES.search(code):
        return "the front end's own functions"
    return None


# -- collection and selection -------------------------------------------------------------------

def documentation_entries() -> Iterator[tuple[str, str, list[str]]]:
    """(chapter, entry, example codes) for every doc entry in document order, ignored
    examples left out.  Imports Mathics3 (with its builtins, which the documentation needs)."""
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.doc.structure import MathicsMainDocumentation

    import_and_load_builtins()
    documentation = MathicsMainDocumentation()
    documentation.load_documentation_sources()
    for part in documentation.parts:
        for chapter in part.chapters:
            if chapter.doc:
                yield chapter.title, chapter.title, _codes(chapter.doc.get_tests())
            for section in chapter.all_sections:
                yield chapter.title, f"{chapter.title} / {section.title}", _codes(
                    section.get_tests())
                for sub in section.subsections or []:
                    yield chapter.title, f"{chapter.title} / {section.title} / {sub.title}", \
                        _codes(sub.get_tests())


def _codes(tests: Iterable[Any]) -> list[str]:
    return [test.test for test in tests if not test.ignore]


def select_examples(entries: Iterable[tuple[str, str, list[str]]],
           stride: int = STRIDE) -> list[Example]:
    """The workload (see the module's docstring): filtered examples of every ``stride``-th
    doc entry and of the tutorial chapters, in document order."""
    chosen: list[Example] = []
    seen = 0
    for chapter, entry, codes in entries:
        if chapter in EXCLUDED_CHAPTERS:
            continue
        kept = [code for code in codes if excluded(code) is None]
        if not kept:
            continue
        seen += 1
        if chapter in TUTORIAL_CHAPTERS or (seen - 1) % stride == 0:
            chosen.append(Example(entry, RESET))
            chosen.extend(Example(entry, code) for code in kept)
    return chosen


def workload(stride: int = STRIDE, timeout: float = START_TIMEOUT) -> list[Example]:
    """The selected cells of this Mathics3's documentation, collected in a subprocess (so that
    the caller's process does not load Mathics3 and its builtins)."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--json",
                           "--stride", str(stride)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"collecting the documentation's examples failed:\n{done.stderr}")
    return [Example(**e) for e in json.loads(done.stdout)]


# -- the reference: Mathics3 itself ------------------------------------------------------------

def evaluate_reference(examples: Iterable[Example], timeout: float,
                       sink: Callable[[Outcome], None]) -> None:
    """Evaluate the examples in one MathicsSession through Mathics3's main loop, in order;
    ``sink`` gets each outcome.  Runs in the reference subprocess (``main``)."""
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.core.systemsymbols import SymbolAborted
    from mathics.session import MathicsSession

    import_and_load_builtins()
    session = MathicsSession(catch_interrupt=True)
    evaluation = session.evaluation

    def alarm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # Mathics3's main loop turns it into $Aborted

    signal.signal(signal.SIGALRM, alarm)
    for example in examples:
        evaluation.exc_result = None  # the main loop sets it: still None if it never ran
        text, failure = None, None
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            result = session.evaluate_as_in_cli(example.code, form="text")
            text, out = result.result, result.out
        except Exception as exc:  # a bug of Mathics3's, which its main loop lets out
            failure = f"{type(exc).__name__}: {exc}"
            out, evaluation.out = evaluation.out, []
            evaluation.stopped, evaluation.recursion_depth = False, 0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - started
        outs = [["message" if o.is_message else "print", str(o)] for o in out]
        never_ran = failure is None and evaluation.exc_result is None
        sink(Outcome(
            result=None if text is None else str(text),
            outs=outs,
            aborted=evaluation.exc_result is SymbolAborted,
            syntax=never_ran and any(t.startswith("Syntax::") for _, t in outs),
            exception=failure,
            timed_out=seconds >= timeout,
            seconds=seconds,
        ))


class Reference:
    """Mathics3 itself evaluating the examples in a subprocess of its own (stdin /dev/null,
    its own process group), started at once so that the caller can do something else
    meanwhile; ``outcomes`` waits for it.  Outcomes travel as JSON lines in a temporary
    directory, written as they come, so that a reference that hangs still says how far it
    got."""

    def __init__(self, examples: list[Example], timeout: float = EXAMPLE_TIMEOUT) -> None:
        self.count = len(examples)
        self.workdir = tempfile.mkdtemp(prefix="rk-doc-examples-")
        source = os.path.join(self.workdir, "examples.json")
        with open(source, "w") as f:
            json.dump([asdict(e) for e in examples], f)
        self.results = os.path.join(self.workdir, "outcomes.jsonl")
        self.log = os.path.join(self.workdir, "output.txt")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--reference", self.results,
                 "--examples", source, "--timeout", str(timeout)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )

    def outcomes(self, timeout: float) -> list[Outcome]:
        """Wait at most ``timeout`` s, then read the outcomes (the process is killed if it has
        not ended); RuntimeError, with its output, unless every example has one."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        try:
            outcomes: list[Outcome] = []
            if os.path.exists(self.results):
                with open(self.results) as f:
                    outcomes = [Outcome(**json.loads(line)) for line in f if line.strip()]
            if len(outcomes) != self.count or self.proc.returncode != 0:
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-3000:]
                raise RuntimeError(
                    f"Mathics3 (the reference) ended with {self.proc.returncode} after "
                    f"{len(outcomes)} of {self.count} examples; its output:\n{tail}")
            return outcomes
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """End the reference process (and anything it started) if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class ReferenceSession:
    """Mathics3 itself in a subprocess like ``Reference``'s, evaluating one cell at a time on
    request (over a pipe pair; stdin stays /dev/null), so that a benchmark can alternate it
    with a kernel cell by cell and load from elsewhere hits both alike."""

    def __init__(self, timeout: float = EXAMPLE_TIMEOUT) -> None:
        self.timeout = timeout
        requests, self._requests = os.pipe()
        self._results, results = os.pipe()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", f"{requests},{results}",
             "--timeout", str(timeout)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            pass_fds=(requests, results), start_new_session=True,
        )
        os.close(requests)
        os.close(results)
        self._out = os.fdopen(self._requests, "w")
        self._in = os.fdopen(self._results)

    def evaluate(self, example: Example) -> Outcome:
        """Mathics3's outcome of one cell (the first waits for Mathics3 to start)."""
        self._out.write(json.dumps(asdict(example)) + "\n")
        self._out.flush()
        ready, _, _ = select.select([self._in], [], [], START_TIMEOUT + 2 * self.timeout)
        line = self._in.readline() if ready else ""
        if not line:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"Mathics3 (the reference) gave no outcome for {example.code!r};"
                               f" its output:\n{tail}")
        return Outcome(**json.loads(line))

    def close(self) -> None:
        """End the process (closing its requests ends it; killed if it does not go)."""
        for stream in (self._out, self._in):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


# -- through a Jupyter kernel ------------------------------------------------------------------

class KernelSession:
    """A fresh kernel started through ``KernelManager`` as JupyterLab starts it, and a client;
    ``cell`` runs one cell.  Its stderr goes to a temporary file, shown when something fails;
    ``close`` shuts the kernel down whatever happened."""

    def __init__(self, kernel_name: str = "rk-local", timeout: float = EXAMPLE_TIMEOUT) -> None:
        from jupyter_client.manager import KernelManager

        self.name = kernel_name
        self.timeout = timeout
        self.log = tempfile.TemporaryFile()
        self.manager = KernelManager(kernel_name=kernel_name)
        self.manager.start_kernel(stderr=self.log)
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def cell(self, code: str) -> Outcome:
        return kernel_cell(self.manager, self.client, code, self.timeout)

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        self.client.stop_channels()
        try:
            self.manager.shutdown_kernel(now=False)
        except Exception:  # a kernel that does not shut down cleanly still must go
            self.manager.shutdown_kernel(now=True)
        finally:
            self.log.close()


def run_kernel(examples: list[Example], kernel_name: str = "rk-local",
               timeout: float = EXAMPLE_TIMEOUT) -> list[Outcome]:
    """Evaluate the examples as cells of one fresh kernel, in order."""
    kernel = KernelSession(kernel_name, timeout)
    outcomes: list[Outcome] = []
    try:
        for example in examples:
            outcomes.append(kernel.cell(example.code))
    except Exception as exc:
        raise RuntimeError(f"{kernel_name} failed after {len(outcomes)} cells: {exc!r}; its "
                           f"stderr:\n{kernel.stderr_tail()}") from exc
    finally:
        kernel.close()
    return outcomes


def kernel_cell(manager: Any, client: Any, code: str, timeout: float) -> Outcome:
    """One cell, as a notebook runs it: its outputs in order until the kernel is idle, then
    its reply; the seconds are what a notebook waits.  Past ``timeout`` the kernel is
    interrupted (the outcome says so) and given as long again to end the cell."""
    started = time.perf_counter()
    msg_id = client.execute(code, allow_stdin=False, stop_on_error=False)
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if outcome.timed_out:
                raise TimeoutError(f"the cell {code!r} did not end after an interrupt")
            outcome.timed_out = True
            manager.interrupt_kernel()
            deadline = time.monotonic() + timeout
            continue
        try:
            msg = client.get_iopub_msg(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        if kind == "stream":  # one message a line: the kernel ends each with a newline
            text = content["text"]
            outcome.outs.append(["print" if content["name"] == "stdout" else "message",
                                 text[:-1] if text.endswith("\n") else text])
        elif kind in ("execute_result", "display_data"):
            outcome.result = content["data"].get("text/plain")
            outcome.formats = sorted(content["data"])
        elif kind == "error":
            outcome.error = [content["ename"], content["evalue"]]
    while True:
        reply = client.get_shell_msg(timeout=max(deadline - time.monotonic(), 1.0))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    outcome.seconds = time.perf_counter() - started
    for page in reply["content"].get("payload", []):  # ?Plot: the help goes to the pager
        if page.get("source") == "page":
            outcome.result = page["data"].get("text/plain")
    return outcome


# -- comparison ----------------------------------------------------------------------------------

_SOURCE = re.compile(r" \(line (\d+) of [^()]*\)\.$")


def normalise_reference(outcome: Outcome) -> dict[str, Any]:
    """Mathics3's outcome as a kernel shows it by design (README: "Differences from Mathics3
    itself (intended)"): (1) an aborted evaluation is an error named $Aborted, not a result;
    (2) an example that does not parse is an error named SyntaxError whose text is its Syntax
    messages, (3) which name the cell as their source; (4) a Python exception that escapes
    Mathics3 (a bug of Mathics3's) is the message ``Mathics3::err: internal error: ...``."""
    result, outs, error = outcome.result, [list(o) for o in outcome.outs], None
    if outcome.aborted and result == "$Aborted":
        result, error = None, "$Aborted"
    if outcome.syntax:
        error = "SyntaxError"
        outs = [[kind, _cell_source(text)] for kind, text in outs]
    if outcome.exception is not None:
        outs.append(["message", f"Mathics3::err: internal error: {outcome.exception}"])
    return {"result": result, "outs": outs, "error": error}


def normalise_kernel(outcome: Outcome) -> dict[str, Any]:
    """The kernel's outcome in the same terms: a SyntaxError's text is its messages."""
    outs, error = [list(o) for o in outcome.outs], None
    if outcome.error is not None:
        ename, evalue = outcome.error
        error = ename
        if ename == "SyntaxError":
            outs += [["message", line] for line in evalue.split("\n") if line]
        elif ename != "$Aborted":
            error = f"{ename}: {evalue}"
    return {"result": outcome.result, "outs": outs, "error": error}


def _cell_source(text: str) -> str:
    """A Syntax message of the cell's own parse names the cell ("line 1 of the cell")."""
    return _SOURCE.sub(r" (line \1 of the cell).", text) if text.startswith("Syntax::") else text


@dataclass
class Difference:
    """One example whose outcomes differ."""

    index: int
    example: Example
    expected: dict[str, Any]
    got: dict[str, Any]
    why: str

    def report(self) -> str:
        lines = [f"#{self.index} [{self.example.entry}] {self.example.code}", f"  {self.why}"]
        for key in ("result", "outs", "error"):
            if self.expected[key] != self.got[key]:
                lines.append(f"  {key}: Mathics3 {self.expected[key]!r}")
                lines.append(f"  {' ' * len(key)}  kernel   {self.got[key]!r}")
        return "\n".join(lines)


def compare(examples: list[Example], reference: list[Outcome], kernel: list[Outcome]
            ) -> list[Difference]:
    """Every example whose kernel outcome is not Mathics3's (after the intended differences),
    or that timed out on either side."""
    differences = []
    for index, (example, ref, got) in enumerate(zip(examples, reference, kernel, strict=True)):
        expected, shown = normalise_reference(ref), normalise_kernel(got)
        if ref.timed_out or got.timed_out:
            why = "timed out: " + ", ".join(
                side for side, o in (("Mathics3", ref), ("kernel", got)) if o.timed_out)
            differences.append(Difference(index, example, expected, shown, why))
        elif expected != shown:
            differences.append(Difference(index, example, expected, shown, "differs"))
    return differences


# -- command line (the reference subprocess) --------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the selected examples")
    parser.add_argument("--json", action="store_true", help="print them as JSON")
    parser.add_argument("--stride", type=int, default=STRIDE)
    parser.add_argument("--reference", metavar="OUT", help="evaluate in Mathics3, write JSON "
                        "lines of outcomes")
    parser.add_argument("--examples", metavar="JSON", help="the examples (default: select)")
    parser.add_argument("--serve", metavar="IN,OUT", help="evaluate in Mathics3 the examples "
                        "read from fd IN (JSON lines), writing each outcome to fd OUT")
    parser.add_argument("--timeout", type=float, default=EXAMPLE_TIMEOUT)
    args = parser.parse_args(argv)
    if args.serve:
        requests, results = (int(fd) for fd in args.serve.split(","))
        with os.fdopen(requests) as source, os.fdopen(results, "w") as out:
            def answer(outcome: Outcome) -> None:
                out.write(json.dumps(asdict(outcome)) + "\n")
                out.flush()
            evaluate_reference((Example(**json.loads(line)) for line in source), args.timeout,
                               answer)
        return 0
    if args.examples:
        with open(args.examples) as f:
            examples = [Example(**e) for e in json.load(f)]
    else:
        examples = select_examples(documentation_entries(), args.stride)
    if args.json:
        print(json.dumps([asdict(e) for e in examples]))
    if args.list:
        for example in examples:
            print(f"[{example.entry}] {example.code}")
        print(f"{len(examples)} examples")
    if args.reference:
        with open(args.reference, "w") as out:
            def sink(outcome: Outcome) -> None:
                out.write(json.dumps(asdict(outcome)) + "\n")
                out.flush()
            evaluate_reference(examples, args.timeout, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Wolfram engine, as far as it can be tested without a licensed Wolfram kernel.

No Wolfram kernel runs here.  What is tested for real: discovery on fake installation trees;
the ctypes binding against a stand-in WSTP library compiled with gcc at test time (a loopback
that keeps what is put and gives it back, so that every signature is exercised through C);
the packet conversation against packet sequences written down from the WSTP documentation
(with a fake clock for the interrupt escalation); the recognition of licence failures in the
kernel's own words; ``WolframEngine.start`` up to the WSTP connection, with fake kernels
(scripts) that fail the way real ones do; and the helper package RKJupyter.wl, loaded and
evaluated by Mathics3 where Mathics3 has the functions it uses.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rk_jupyter.agent.engines import create_engine
from rk_jupyter.agent.engines.base import EngineError, InputAborted
from rk_jupyter.agent.engines.process import exit_status
from rk_jupyter.agent.engines.wolfram import WolframEngine, discovery, engine, spare, wstp
from rk_jupyter.agent.engines.wolfram.engine import IMPOSTOR, NONCE_ENV
from rk_jupyter.agent.engines.wolfram.session import (
    ABORT_CHOICE,
    DIALOG_EXIT,
    DISPLAY_TAG,
    FAILED,
    LICENCE_PROMPT,
    NOT_ANSWERING,
    Call,
    Cell,
    Escalation,
    Expression,
    converse,
    licence_problem,
    prompt_failure,
    result_bundle,
    start_failure,
)
from rk_jupyter.link.expr import Function, Symbol
from rk_jupyter.link.packets import ABORTED, MANIPULATE_MIME, manipulate_request, packet

HELPER = Path(engine.__file__).resolve().parents[2] / "wl" / "RKJupyter.wl"


# -- discovery on fake installation trees -------------------------------------------------


def touch(path: Path, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    path.chmod(0o755 if executable else 0o644)
    return path


def linux_install(root: Path, sid: str = "Linux-x86-64", kernel: str = "WolframKernel",
                  library: str | None = "libWSTP64i4.so", kit: str = "WSTP") -> Path:
    touch(root / "Executables" / kernel, executable=True)
    (root / "SystemFiles" / "Kernel").mkdir(parents=True, exist_ok=True)
    if library:
        touch(root / "SystemFiles/Links" / kit / "DeveloperKit" / sid / "CompilerAdditions"
              / library)
    return root / "Executables" / kernel


def test_linux_kernel_path_finds_its_wstp_library(tmp_path: Path) -> None:
    root = tmp_path / "usr/local/Wolfram/Wolfram/14.3"
    kernel = linux_install(root)
    inst = discovery.locate(str(kernel), system="Linux", machine="x86_64")
    assert inst.kernel == kernel
    assert inst.library == (root / "SystemFiles/Links/WSTP/DeveloperKit/Linux-x86-64"
                            / "CompilerAdditions/libWSTP64i4.so")
    assert (inst.api, inst.system_id, inst.link_flag) == ("WS", "Linux-x86-64", "-wstp")


def test_installation_directory_as_kernel_path(tmp_path: Path) -> None:
    root = tmp_path / "opt/Wolfram/WolframEngine/14.1"
    kernel = linux_install(root, sid="Linux-ARM64")
    inst = discovery.locate(str(root), system="Linux", machine="aarch64")
    assert inst.kernel == kernel and inst.system_id == "Linux-ARM64"
    assert inst.library.parent.parent.name == "Linux-ARM64"


def test_default_search_prefers_the_newest_version(tmp_path: Path) -> None:
    linux_install(tmp_path / "usr/local/Wolfram/Mathematica/13.0")
    newest = linux_install(tmp_path / "usr/local/Wolfram/Mathematica/14.2")
    linux_install(tmp_path / "usr/local/Wolfram/Mathematica/9.0")
    inst = discovery.locate(system="Linux", machine="x86_64", search_path=False,
                            install_globs=(str(tmp_path / "usr/local/Wolfram/*/*"),))
    assert inst.kernel == newest


def test_library_in_system_files_libraries(tmp_path: Path) -> None:
    root = tmp_path / "w/14.3"
    kernel = linux_install(root, library=None)
    lib = touch(root / "SystemFiles/Libraries/Linux-x86-64/libWSTP64i4.so")
    assert discovery.locate(str(kernel), system="Linux", machine="x86_64").library == lib


def test_symlinked_launcher_resolves_to_its_installation(tmp_path: Path) -> None:
    root = tmp_path / "usr/local/Wolfram/Mathematica/13.3"
    kernel = linux_install(root, kernel="math")
    link = tmp_path / "usr/local/bin/math"
    link.parent.mkdir(parents=True)
    link.symlink_to(kernel)
    inst = discovery.locate(str(link), system="Linux", machine="x86_64")
    assert inst.kernel == link and inst.library.name == "libWSTP64i4.so"


def test_legacy_mathlink_installation(tmp_path: Path) -> None:
    root = tmp_path / "usr/local/Wolfram/Mathematica/9.0"
    kernel = linux_install(root, kernel="MathKernel", library="libML64i4.so", kit="MathLink")
    inst = discovery.locate(str(kernel), system="Linux", machine="x86_64")
    assert (inst.api, inst.link_flag, inst.library.name) == ("ML", "-mathlink", "libML64i4.so")


def test_wstp_is_preferred_when_mathlink_is_also_shipped(tmp_path: Path) -> None:
    root = tmp_path / "usr/local/Wolfram/Mathematica/12.0"
    kernel = linux_install(root)
    touch(root / "SystemFiles/Links/MathLink/DeveloperKit/Linux-x86-64/CompilerAdditions"
          / "libML64i4.so")
    assert discovery.locate(str(kernel), system="Linux", machine="x86_64").api == "WS"


def test_macos_app_bundle(tmp_path: Path) -> None:
    contents = tmp_path / "Applications/Mathematica.app/Contents"
    kernel = touch(contents / "MacOS/WolframKernel", executable=True)
    framework = touch(contents / "SystemFiles/Links/WSTP/DeveloperKit/MacOSX-ARM64"
                      / "CompilerAdditions/wstp.framework/wstp")
    for path in (kernel, tmp_path / "Applications/Mathematica.app"):
        inst = discovery.locate(str(path), system="Darwin", machine="arm64")
        assert (inst.kernel, inst.library, inst.system_id) == (kernel, framework, "MacOSX-ARM64")


def test_windows_installation(tmp_path: Path) -> None:
    root = tmp_path / "Program Files/Wolfram Research/Mathematica/14.0"
    kernel = touch(root / "WolframKernel.exe")
    dll = touch(root / "SystemFiles/Libraries/Windows-x86-64/wstp64i4.dll")
    inst = discovery.locate(str(root), system="Windows", machine="AMD64")
    assert (inst.kernel, inst.library, inst.system_id) == (kernel, dll, "Windows-x86-64")


def test_missing_kernel_path_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere/Executables/WolframKernel"
    with pytest.raises(EngineError) as error:
        discovery.locate(str(missing), system="Linux", machine="x86_64")
    assert str(missing) in str(error.value) and "does not exist" in str(error.value)
    assert "rk-jupyter add NAME --engine wolfram --kernel-path" in str(error.value)


def test_kernel_that_is_not_executable(tmp_path: Path) -> None:
    kernel = linux_install(tmp_path / "w/14.3")
    kernel.chmod(0o644)
    with pytest.raises(EngineError, match="not an executable file"):
        discovery.locate(str(kernel), system="Linux", machine="x86_64")


def test_directory_without_a_kernel(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError) as error:
        discovery.locate(str(tmp_path / "empty"), system="Linux", machine="x86_64")
    assert "no Wolfram kernel executable" in str(error.value)
    assert str(tmp_path / "empty" / "Executables") in str(error.value)


def test_missing_library_lists_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "w/14.3"
    kernel = linux_install(root, library=None)
    with pytest.raises(EngineError) as error:
        discovery.locate(str(kernel), system="Linux", machine="x86_64")
    text = str(error.value)
    assert "WSTP library" in text and "--kernel-path" in text
    assert str(root / "SystemFiles/Links/WSTP/DeveloperKit/Linux-x86-64/CompilerAdditions"
               / "libWSTP64i4.so") in text


def test_kernel_outside_any_installation(tmp_path: Path) -> None:
    kernel = touch(tmp_path / "bin/WolframKernel", executable=True)
    with pytest.raises(EngineError, match="not inside a Wolfram installation"):
        discovery.locate(str(kernel), system="Linux", machine="x86_64")


def test_nothing_installed(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as error:
        discovery.locate(system="Linux", machine="x86_64", search_path=False,
                         install_globs=(str(tmp_path / "usr/local/Wolfram/*/*"),))
    assert "no Wolfram kernel found" in str(error.value) and "--kernel-path" in str(error.value)


def test_unsupported_platform() -> None:
    with pytest.raises(EngineError, match="not made for this platform"):
        discovery.system_id("Linux", "ppc64le")


# -- the ctypes binding --------------------------------------------------------------------


def test_signatures_follow_the_c_prototypes() -> None:
    """WSLINK/WSENV are pointers; strings the library allocates come back as raw pointers (so
    they can be released); out-parameters are pointers; integers are C ints or 64-bit."""
    pointer_types = (ctypes.c_void_p, ctypes.c_char_p)
    for name, (restype, argtypes) in wstp.SIGNATURES.items():
        assert restype in (None, ctypes.c_int, ctypes.c_void_p), name
        assert argtypes and argtypes[0] is ctypes.c_void_p, name  # the link or environment
        for arg in argtypes[1:]:
            assert arg in (ctypes.c_int, ctypes.c_int64, ctypes.c_double, *pointer_types) or (
                issubclass(arg, ctypes._Pointer)), (name, arg)
        if name.startswith("Release"):
            assert restype is None
            assert name.removeprefix("Release") in {
                n.removeprefix("Get") for n in wstp.SIGNATURES} | {"LinkName", "ErrorMessage"}
    assert wstp.OPTIONAL <= set(wstp.SIGNATURES)
    assert (wstp.TERMINATE_MESSAGE, wstp.INTERRUPT_MESSAGE, wstp.ABORT_MESSAGE) == (1, 2, 3)


def test_loading_a_file_that_is_not_a_library(tmp_path: Path) -> None:
    bogus = tmp_path / "libWSTP64i4.so"
    bogus.write_text("not a library")
    with pytest.raises(EngineError) as error:
        wstp.Library(bogus)
    assert str(bogus) in str(error.value) and "cannot load the WSTP library" in str(error.value)


FAKE_WSTP_C = r"""
/* A stand-in for libWSTP: a loopback link that gives back what was put, token by token. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#define CAT(a, b) a##b
#define XCAT(a, b) CAT(a, b)
#define API(name) XCAT(PFX, name)

typedef struct { int type; char *s; int n; int64_t i; double r; } token;
static token q[65536];
static int head, tail, err, fail_puts, released, messages[64], nmessages, activated, closes;
static int stopped_signals[64], nstopped;
static volatile int stop;
static char open_args[4096], last_code[4096], last_answer[256], last_head[256];
static int env_object, link_object, packet_start = -1, evaluations, line_no = 7;

static void push(token t) { if (packet_start < 0) packet_start = tail; q[tail++] = t; }
static token *peek(void) { return head < tail ? &q[head] : NULL; }
static char *copy(const char *s, int n) { char *c = malloc(n + 1); memcpy(c, s, n); c[n] = 0;
                                          return c; }

/* Like a library with signal handling of its own: WSInitialize takes the agent's signals. */
static void wstp_handler(int sig) { (void)sig; write(2, "wstp-handler\n", 13); _exit(3); }
void *API(Initialize)(void *p) {
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGPIPE};
    for (int i = 0; i < 4; i++) signal(sigs[i], wstp_handler);
    return &env_object; }
void API(StopHandlingSignal)(void *env, int sig) { stopped_signals[nstopped++] = sig; }
void *API(OpenArgcArgv)(void *env, int argc, char **argv, int *e) {
    open_args[0] = 0;
    for (int i = 0; i < argc; i++) { strcat(open_args, argv[i]); strcat(open_args, " "); }
    *e = 0; return &link_object; }
const char *API(LinkName)(void *l) { return strdup("fake-link-name"); }
void API(ReleaseLinkName)(void *l, const char *s) { free((void *)s); released++; }
int API(Activate)(void *l) {
    const char *mode = getenv("FAKE_WSTP_ACTIVATE");
    if (mode && strcmp(mode, "ok") == 0) { activated = 1; return 1; }
    for (int waited = 0; !stop && waited < 30000; waited += 10) usleep(10000);
    err = 1; return 0; }
void API(Close)(void *l) { closes++; }
int API(Error)(void *l) { return err; }
int API(ClearError)(void *l) { err = 0; return 1; }
const char *API(ErrorMessage)(void *l) { return strdup(err ? "fake link error" : "no error"); }
void API(ReleaseErrorMessage)(void *l, const char *m) { free((void *)m); released++; }
/* Before WSActivate, WSReady says whether the other side of a listening link exists. */
int API(Ready)(void *l) {
    if (!activated) { const char *mode = getenv("FAKE_WSTP_ACTIVATE");
                      return mode && strcmp(mode, "ok") == 0; }
    return head < tail; }
int API(Flush)(void *l) { return 1; }
int API(PutMessage)(void *l, int m) { messages[nmessages++] = m; return 1; }
/* With FAKE_WSTP_KERNEL set, it plays the kernel's side: what a front end sends (EvaluatePacket,
   EnterTextPacket, bare answers) is taken, not given back, and EvaluatePacket[{token, $Line}]
   is answered with ReturnPacket[{token, line}]; other packets are given back as usual. */
static int is_head(int s, const char *name) {
    return q[s].type == 'F' && s + 1 < tail && strcmp(q[s + 1].s, name) == 0; }
int API(EndPacket)(void *l) {
    int s = packet_start;
    packet_start = -1;
    if (s >= 0 && getenv("FAKE_WSTP_KERNEL")) {
        if (q[s].type == '"') { snprintf(last_answer, sizeof last_answer, "%s", q[s].s);
                                tail = s; return 1; }
        if (is_head(s, "EvaluatePacket") || is_head(s, "EnterTextPacket")) {
            char id[256] = "";
            int sync = s + 4 < tail && is_head(s + 2, "List") && q[s + 4].type == '"';
            if (sync) snprintf(id, sizeof id, "%s", q[s + 4].s);
            else { evaluations++;
                   if (s + 3 < tail && q[s + 2].type == 'F')
                       snprintf(last_head, sizeof last_head, "%s", q[s + 3].s);
                   for (int i = s; i < tail; i++)
                       if (q[i].type == '"') snprintf(last_code, sizeof last_code, "%s", q[i].s); }
            tail = s;
            if (sync) {
                push((token){'F', NULL, 1}); push((token){'#', strdup("ReturnPacket"), 12});
                push((token){'F', NULL, 2}); push((token){'#', strdup("List"), 4});
                push((token){'"', strdup(id), (int)strlen(id)});
                push((token){'+', NULL, 0, line_no});
                packet_start = -1;
                q[tail++] = (token){'E'};
            }
            return 1;
        }
    }
    q[tail++] = (token){'E'};
    return 1; }
int API(PutFunction)(void *l, const char *s, int n) {
    if (fail_puts) { err = 5; return 0; }
    push((token){'F', NULL, n}); push((token){'#', strdup(s), (int)strlen(s)}); return 1; }
int API(PutUTF8String)(void *l, const char *s, int n) { push((token){'"', copy(s, n), n});
                                                        return 1; }
int API(PutUTF8Symbol)(void *l, const char *s, int n) { push((token){'#', copy(s, n), n});
                                                        return 1; }
int API(PutInteger64)(void *l, int64_t i) { push((token){'+', NULL, 0, i}); return 1; }
int API(PutReal64)(void *l, double r) { push((token){'*', NULL, 0, 0, r}); return 1; }
int API(GetType)(void *l) {
    token *t = peek();
    if (!t || t->type == 'E') { err = 24; return 0; }
    return t->type == 'F' ? 70 : t->type == '"' ? 34 : t->type == '#' ? 35
         : t->type == '+' ? 43 : 42; }
int API(GetArgCount)(void *l, int *n) { *n = q[head++].n; return 1; }
static int get_text(int type, const unsigned char **s, int *b, int *c) {
    token *t = peek();
    if (!t || t->type != type) { err = 3; return 0; }
    head++; *s = (const unsigned char *)copy(t->s, t->n); *b = t->n; *c = 0;
    for (int i = 0; i < t->n; i++) *c += ((unsigned char)t->s[i] & 0xC0) != 0x80;
    return 1; }
int API(GetUTF8String)(void *l, const unsigned char **s, int *b, int *c) {
    return get_text('"', s, b, c); }
int API(GetUTF8Symbol)(void *l, const unsigned char **s, int *b, int *c) {
    return get_text('#', s, b, c); }
void API(ReleaseUTF8String)(void *l, const unsigned char *s, int n) { free((void *)s);
                                                                       released++; }
void API(ReleaseUTF8Symbol)(void *l, const unsigned char *s, int n) { free((void *)s);
                                                                       released++; }
/* An integer token with n = 1 is wider than 64 bits: WSGetInteger64 fails on it. */
int API(GetInteger64)(void *l, int64_t *i) {
    if (q[head].n == 1) { err = 17; return 0; }
    *i = q[head++].i; return 1; }
int API(GetReal64)(void *l, double *r) { *r = q[head++].r; return 1; }
static const char *names[] = {"", "InputPacket", "TextPacket", "ReturnPacket",
                              "ReturnTextPacket", "MessagePacket", "MenuPacket", "CallPacket",
                              "InputNamePacket", "OutputNamePacket", "SyntaxPacket",
                              "DisplayPacket", "DisplayEndPacket", "EvaluatePacket",
                              "EnterTextPacket", "EnterExpressionPacket",
                              "ReturnExpressionPacket", "SuspendPacket", "ResumePacket",
                              "BeginDialogPacket", "EndDialogPacket", "InputStringPacket"};
int API(NextPacket)(void *l) {
    while (head < tail && q[head].type != 'F') head++;
    if (head + 1 >= tail) { err = 1; return 0; }
    head++;
    const char *name = q[head++].s;
    for (int code = 1; code < 22; code++) if (strcmp(names[code], name) == 0) return code;
    err = 23; return 0; }
int API(NewPacket)(void *l) {
    while (head < tail && q[head].type != 'E') head++;
    if (head < tail) head++;
    return 1; }

/* for the tests */
const char *fake_open_args(void) { return open_args; }
int fake_released(void) { return released; }
int fake_message_count(void) { return nmessages; }
int fake_message(int i) { return messages[i]; }
int fake_pending(void) { return tail - head; }
void fake_fail_puts(int on) { fail_puts = on; }
void fake_stop(void) { stop = 1; }
int fake_evaluations(void) { return evaluations; }
const char *fake_last_code(void) { return last_code; }
const char *fake_last_answer(void) { return last_answer; }
const char *fake_last_head(void) { return last_head; }
void fake_set_line(int n) { line_no = n; }
int fake_closes(void) { return closes; }
int fake_stopped_signal_count(void) { return nstopped; }
int fake_stopped_signal(int i) { return stopped_signals[i]; }
/* ReturnPacket[2^70], as a kernel would send a bignum. */
void fake_put_bignum_return(void) {
    packet_start = -1;
    q[tail++] = (token){'F', NULL, 1}; q[tail++] = (token){'#', strdup("ReturnPacket"), 12};
    q[tail++] = (token){'+', NULL, 1, 0}; q[tail++] = (token){'E'}; }
"""


def compile_library(tmp_path: Path, source: str, name: str, prefix: str = "WS") -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the stand-in WSTP library")
    c_file = tmp_path / f"{name}.c"
    c_file.write_text(source)
    library = tmp_path / name
    subprocess.run(["gcc", "-shared", "-fPIC", f"-DPFX={prefix}", "-o", str(library),
                    str(c_file)], check=True, capture_output=True)
    return library


@pytest.fixture(scope="module")
def fake_wstp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_library(tmp_path_factory.mktemp("fakewstp"), FAKE_WSTP_C, "libWSTP64i4.so")


def fresh_link(path: Path, api: str = "WS") -> tuple[wstp.Link, Any]:
    library = wstp.Library(path, api)
    return wstp.Link(library, library.environment()), ctypes.CDLL(str(path))


def test_library_lacking_functions(tmp_path: Path) -> None:
    path = compile_library(tmp_path, "void *WSInitialize(void *p) { return p; }\n", "libpart.so")
    with pytest.raises(EngineError) as error:
        wstp.Library(path)
    assert "WSActivate" in str(error.value) and "WSGetUTF8String" in str(error.value)
    assert "WSReleaseLinkName" not in str(error.value)  # optional (newer than 10)


def test_listen_link_arguments_and_name(fake_wstp: Path) -> None:
    library = wstp.load(fake_wstp)
    link = wstp.Link.listen(library, "SharedMemory")
    fake = ctypes.CDLL(str(fake_wstp))
    fake.fake_open_args.restype = ctypes.c_char_p
    assert fake.fake_open_args().decode() == (
        "-wstp -linkmode listen -linkprotocol SharedMemory -linkoptions MLDontInteract ")
    released = fake.fake_released()
    with link.lock:
        assert link.name() == "fake-link-name"
    assert fake.fake_released() == released + 1


def test_expressions_round_trip_through_c(fake_wstp: Path) -> None:
    link, fake = fresh_link(fake_wstp)
    text = 'x = "\\[Alpha]" <> "∫ é \\\\ \\n"'  # backslashes must arrive untouched
    cell = Function(Symbol("EvaluatePacket"), Function(Symbol("RKJupyter`Evaluate"), text))
    with link.lock:
        link.put_packet(cell)
        assert link.get_expr() == cell
        link.lib.NewPacket(link.handle)
        data = [2**62, -(2**63), 2.5, True, None, "ü", Symbol("System`$Aborted"), [1, [2]]]
        link.put_packet(Function(Symbol("ReturnPacket"), data))
        name, (value,) = link.read_packet()
    assert name == "ReturnPacket"
    assert wstp.to_python(value) == [2**62, -(2**63), 2.5, True, None, "ü", ABORTED, [1, [2]]]
    assert fake.fake_pending() == 0


def test_packets_as_the_kernel_sends_them(fake_wstp: Path) -> None:
    link, _ = fresh_link(fake_wstp)
    association = Function(Symbol("Association"),
                           Function(Symbol("Rule"), "line", 2),
                           Function(Symbol("Rule"), "results", Function(
                               Symbol("List"), Function(Symbol("Association"),
                                                        Function(Symbol("Rule"), "line", 1),
                                                        Function(Symbol("Rule"), "text/plain",
                                                                 "2")))))
    with link.lock:
        link.put_packet(Function(Symbol("MessagePacket"), Symbol("Power"), "infy"))
        link.put_packet(Function(Symbol("MenuPacket"), 1, "Interrupt> "))
        link.put_packet(Function(Symbol("ReturnPacket"), association))
        link.put_packet(Function(Symbol("InputPacket")))  # fewer arguments than usual
        assert link.read_packet() == ("MessagePacket", (Symbol("Power"), "infy"))
        assert link.read_packet() == ("MenuPacket", (1, "Interrupt> "))
        name, (value,) = link.read_packet()
        assert link.read_packet() == ("InputPacket", ())
        link.put_packet(Function(Symbol("NoSuchPacket"), 1))  # WSNextPacket: ILLEGALPKT
        link.put_packet(Function(Symbol("TextPacket"), "after"))
        assert link.read_packet()[0] == "IllegalPacket"
        assert link.read_packet() == ("TextPacket", ("after",))
        assert not link.ready()
    assert wstp.to_python(value) == {"line": 2, "results": [{"line": 1, "text/plain": "2"}]}


def test_answers_and_messages(fake_wstp: Path) -> None:
    link, fake = fresh_link(fake_wstp)
    before = fake.fake_message_count()
    with link.lock:
        link.put_answer(ABORT_CHOICE)
        link.put_message(wstp.ABORT_MESSAGE)
        assert link.get_expr() == "a"
        link.lib.NewPacket(link.handle)
    assert fake.fake_message(before) == 3


def test_failed_put_reports_the_library_error(fake_wstp: Path) -> None:
    link, fake = fresh_link(fake_wstp)
    fake.fake_fail_puts(1)
    try:
        with link.lock, pytest.raises(wstp.WSTPError) as error:
            link.put_packet(Function(Symbol("EvaluatePacket"), 1))
    finally:
        fake.fake_fail_puts(0)
        with link.lock:
            link.lib.ClearError(link.handle)
    assert "fake link error" in str(error.value) and error.value.code == 5


def test_a_number_wider_than_64_bits_is_skipped_not_a_broken_link(fake_wstp: Path) -> None:
    """An uncaught Throw[2^70] once put a bignum on the link; WSGetInteger64 fails on it, and
    the reader took the link for dead.  The packet is replaced, and the link reads on."""
    link, fake = fresh_link(fake_wstp)
    with link.lock:
        fake.fake_put_bignum_return()
        link.put_packet(Function(Symbol("TextPacket"), "after"))
        assert link.read_packet() == ("ReturnPacket", (wstp.UNDECODABLE,))
        assert link.read_packet() == ("TextPacket", ("after",))
        assert link.error() == wstp.WSEOK


SIGNALS_CHECK = """
import os, signal, sys, time
from pathlib import Path
from rk_jupyter.agent.engines.wolfram import wstp
seen = []
signal.signal(signal.SIGTERM, lambda *a: seen.append("agent SIGTERM"))
signal.signal(signal.SIGINT, signal.SIG_IGN)        # as the agent's main does
library = wstp.load(Path(sys.argv[1]))
library.environment()                               # WSInitialize: takes the signals
os.kill(os.getpid(), signal.SIGINT)                 # still ignored
os.kill(os.getpid(), signal.SIGTERM)                # still the agent's
time.sleep(0.2)
print(seen)
"""


def test_wstp_does_not_take_the_agents_signals(fake_wstp: Path) -> None:
    """The stand-in's WSInitialize installs handlers for SIGTERM, SIGINT, SIGHUP and SIGPIPE
    (as WSTP's own signal handling may; the reference does not list the set).  After the
    engine initialises WSTP, the agent's handlers are as they were, and WSTP was told to stop
    handling each of those signals."""
    result = subprocess.run([sys.executable, "-c", SIGNALS_CHECK, str(fake_wstp)],
                            capture_output=True, text=True, timeout=60)
    assert "wstp-handler" not in result.stderr, result.stderr
    assert result.returncode == 0 and result.stdout.strip() == "['agent SIGTERM']", result
    fake = ctypes.CDLL(str(fake_wstp))
    wstp.load(fake_wstp).environment()
    stopped = {fake.fake_stopped_signal(i) for i in range(fake.fake_stopped_signal_count())}
    assert stopped == {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE}


def test_mathlink_prefix(tmp_path: Path) -> None:
    path = compile_library(tmp_path, FAKE_WSTP_C, "libML64i4.so", prefix="ML")
    link, _ = fresh_link(path, "ML")
    with link.lock:
        link.put_packet(Function(Symbol("TextPacket"), "old"))
        assert link.read_packet() == ("TextPacket", ("old",))


def test_unsendable_values(fake_wstp: Path) -> None:
    link, _ = fresh_link(fake_wstp)
    with link.lock:
        with pytest.raises(ValueError):
            link.put_expr(2**64)
        with pytest.raises(TypeError):
            link.put_expr(object())


# -- the packet conversation ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """The kernel's side of the link: events, and seconds of silence (floats), in order."""

    def __init__(self, clock: FakeClock, items: list[Any]) -> None:
        self.clock = clock
        self.items = list(items)

    def next_event(self, timeout: float) -> Any:
        if self.items and isinstance(self.items[0], float):
            step = min(timeout, self.items[0])
            self.clock.now += step
            self.items[0] -= step
            if self.items[0] <= 1e-9:
                self.items.pop(0)
            return None
        if self.items:
            return self.items.pop(0)
        self.clock.now += timeout  # the kernel says nothing, ever
        return None


class FakeKernel:
    """Records what the conversation sends (with the time); answers a synchronisation as a
    kernel would, after ``stale_aborts`` leftover $Aborted answers."""

    def __init__(self, script: Script, line: int = 7, stale_aborts: int = 0) -> None:
        self.script = script
        self.line = line
        self.stale_aborts = stale_aborts
        self.actions: list[tuple[float, str, Any]] = []

    def record(self, action: str, value: Any = None) -> None:
        self.actions.append((self.script.clock.now, action, value))

    def evaluate(self, expr: Any) -> None:
        self.record("evaluate", expr)
        if isinstance(expr, Function) and expr.head == Symbol("List"):
            token = expr.args[0]
            if self.stale_aborts:
                self.stale_aborts -= 1
                self.script.items.append(("ReturnPacket", (ABORTED,)))
            else:
                self.script.items.append(("ReturnPacket", ([token, self.line],)))

    def answer(self, text: str) -> None:
        self.record("answer", text)

    def enter_text(self, text: str) -> None:
        self.record("enter_text", text)

    def reply(self, expr: Any) -> None:
        self.record("reply", expr)

    def message(self, code: int) -> None:
        self.record("message", code)

    def kill(self) -> None:
        self.record("kill")

    def kinds(self) -> list[tuple[str, Any]]:
        return [(a, v if a != "evaluate" else "sync") for _, a, v in self.actions]


class FakeHost:
    def __init__(self, answer: str | None = None) -> None:
        self.emitted: list[Function] = []
        self.prompts: list[Function] = []
        self.answer = answer

    def emit(self, pkt: Function) -> None:
        self.emitted.append(pkt)

    def read_input(self, prompt: Function) -> str:
        self.prompts.append(prompt)
        if self.answer is None:
            raise InputAborted()
        return self.answer


def run_cell(items: list[Any], *, answer: str | None = None, line: int = 7,
             stale_aborts: int = 0, escalation: Escalation | None = None,
             ) -> tuple[Cell, FakeHost, FakeKernel, Script]:
    clock = FakeClock()
    script = Script(clock, items)
    kernel = FakeKernel(script, line, stale_aborts)
    host = FakeHost(answer)
    cell = Cell(host, kernel, clock, escalation or Escalation())
    converse(cell, script.next_event)
    return cell, host, kernel, script


def ret(line: int, *results: dict[str, Any], **extra: Any) -> tuple[str, tuple[Any, ...]]:
    return ("ReturnPacket", ({"line": line, "results": list(results), **extra},))


def test_normal_cell() -> None:
    cell, host, kernel, _ = run_cell([
        ("InputNamePacket", ("In[1]:= ",)),  # the kernel's first prompt, before any request
        ret(2, {"line": 1, "text/plain": "2"}),
    ])
    assert host.emitted == [packet("OutputNamePacket", "Out[1]= "),
                            packet("ReturnPacket", {"text/plain": "2"}),
                            packet("InputNamePacket", "In[2]:= ")]
    assert kernel.actions == [] and cell.died is None


def test_print_message_and_tex_result() -> None:
    bundle = {"line": 3, "text/plain": "1/2", "text/latex": "$$\\frac{1}{2}$$"}
    _, host, _, _ = run_cell([
        ("TextPacket", ("hello\n",)),
        ("MessagePacket", (Symbol("Power"), "infy")),
        ("TextPacket", ("Power::infy: Infinite expression 1/0 encountered.\n",)),
        ret(4, bundle),
    ])
    assert host.emitted == [
        packet("TextPacket", "hello"),
        packet("MessagePacket", "Power", "infy",
               "Power::infy: Infinite expression 1/0 encountered."),
        packet("OutputNamePacket", "Out[3]= "),
        packet("ReturnPacket", {"text/plain": "1/2", "text/latex": "$$\\frac{1}{2}$$"}),
        packet("InputNamePacket", "In[4]:= "),
    ]


def test_null_result_and_message_without_text() -> None:
    _, host, _, _ = run_cell([("MessagePacket", (Symbol("General"), "stop")), ret(3)])
    assert host.emitted == [packet("MessagePacket", "General", "stop", ""),
                            packet("InputNamePacket", "In[3]:= ")]


def test_syntax_error() -> None:
    _, host, _, _ = run_cell([
        ("MessagePacket", (Symbol("Syntax"), "sntxf")),
        ("TextPacket", ('Syntax::sntxf: "1 +" cannot be followed by "* 2".\n',)),
        ret(3, syntax=4),
    ])
    assert host.emitted == [
        packet("MessagePacket", "Syntax", "sntxf",
               'Syntax::sntxf: "1 +" cannot be followed by "* 2".'),
        packet("SyntaxPacket", 4),
        packet("InputNamePacket", "In[3]:= "),
    ]


@pytest.mark.parametrize(("kind", "how"), [("InputPacket", "enter_text"),
                                           ("InputStringPacket", "answer")])
def test_input_is_asked_of_the_front_end(kind: str, how: str) -> None:
    """Input[] wants an expression: its InputPacket is answered EnterTextPacket["41"], which
    the kernel parses (a bare string would make Input["n? "]^2 the string "41" squared);
    InputString[] wants the text itself, a bare string (as a working front end answers)."""
    _, host, kernel, _ = run_cell([(kind, ("n = ",)), ret(2, {"line": 1, "text/plain": "41"})],
                                  answer="41")
    assert host.prompts == [packet(kind, "n = ")]
    assert kernel.kinds() == [(how, "41")]
    assert host.emitted[-1] == packet("InputNamePacket", "In[2]:= ")


@pytest.mark.parametrize(("kind", "how"), [("InputPacket", "enter_text"),
                                           ("InputStringPacket", "answer")])
def test_aborted_input_aborts_the_cell(kind: str, how: str) -> None:
    _, host, kernel, script = run_cell([(kind, ("n = ",)), 0.1,
                                        ("ReturnPacket", (ABORTED,))], answer=None, line=5)
    assert kernel.kinds() == [("message", 3), (how, "$Aborted"), ("evaluate", "sync")]
    assert host.emitted == [packet("ReturnPacket", ABORTED), packet("InputNamePacket", "In[5]:= ")]
    assert script.items == []


def test_interrupt_answered_by_the_abort_message() -> None:
    _, host, kernel, _ = run_cell([1.0, ("RKInterrupt", ()), 0.5, ("ReturnPacket", (ABORTED,))],
                                  line=6)
    assert kernel.kinds() == [("message", 3), ("evaluate", "sync")]
    assert host.emitted == [packet("ReturnPacket", ABORTED), packet("InputNamePacket", "In[6]:= ")]


def test_interrupt_menu_answered_with_abort() -> None:
    """The kernel ignores the abort message; the interrupt message brings its menu."""
    _, host, kernel, _ = run_cell([("RKInterrupt", ()), 6.0,
                                   ("MenuPacket", (1, "Interrupt> ")),
                                   ("ReturnPacket", (ABORTED,))])
    times = {(a, v): t - kernel.actions[0][0] for t, a, v in kernel.actions}
    assert kernel.kinds() == [("message", 3), ("message", 2), ("answer", "a"),
                              ("evaluate", "sync")]
    assert times[("message", 2)] == pytest.approx(5.0)
    assert host.emitted == [packet("ReturnPacket", ABORTED), packet("InputNamePacket", "In[7]:= ")]


def test_trailing_aborted_is_drained_not_taken_for_a_result() -> None:
    """The interrupt arrives as the cell finishes: the result is shown, and the $Aborted the
    late abort causes is consumed by the synchronisation, not left for the next cell."""
    _, host, kernel, script = run_cell([("RKInterrupt", ()),
                                        ret(9, {"line": 8, "text/plain": "done"})],
                                       line=9, stale_aborts=1)
    assert host.emitted == [packet("OutputNamePacket", "Out[8]= "),
                            packet("ReturnPacket", {"text/plain": "done"}),
                            packet("InputNamePacket", "In[9]:= ")]
    assert kernel.kinds() == [("message", 3), ("evaluate", "sync"), ("evaluate", "sync")]
    assert script.items == []


def test_back_at_the_main_loop_without_return_packet() -> None:
    _, host, kernel, _ = run_cell([("RKInterrupt", ()), ("InputNamePacket", ("In[4]:= ",))],
                                  line=4)
    assert host.emitted == [packet("ReturnPacket", ABORTED), packet("InputNamePacket", "In[4]:= ")]


def test_menu_without_an_interrupt_is_answered_with_abort() -> None:
    _, host, kernel, _ = run_cell([("MenuPacket", (1, "Interrupt> ")),
                                   ("ReturnPacket", (ABORTED,))])
    assert kernel.kinds() == [("answer", ABORT_CHOICE), ("evaluate", "sync")]
    assert host.emitted[0] == packet("ReturnPacket", ABORTED)


def test_a_kernel_that_answers_no_interrupt_is_released_not_killed() -> None:
    """After the abort and the interrupt menu, the cell stops waiting (15 s) but nothing ends
    the kernel: its definitions are the user's to give up.  A second interrupt does it:
    terminate at once, kill 5 s later."""
    cell, host, kernel, script = run_cell([("RKInterrupt", ())])
    start = kernel.actions[0][0]
    assert [(t - start, a, v) for t, a, v in kernel.actions] == [
        (0.0, "message", 3), (5.0, "message", 2)]
    assert cell.released and not cell.done and cell.died is None
    assert script.clock.now - start == pytest.approx(15.0) and cell.waited == pytest.approx(15)
    assert host.emitted == []
    # What the kernel still says for the released cell is not shown (its cell has ended).
    script.items += [("TextPacket", ("late\n",)), 30.0]
    cell.interrupt()  # the second interrupt
    converse(cell, script.next_event)
    second = kernel.actions[2][0]
    assert [(t - second, a, v) for t, a, v in kernel.actions[2:]] == [
        (0.0, "message", 1), (5.0, "kill", None)]
    assert cell.died == "the kernel did not end even after its processes were killed"
    assert host.emitted == []


def test_a_released_cell_ends_when_the_kernel_answers_late() -> None:
    cell, host, kernel, script = run_cell([("RKInterrupt", ()), 16.0])
    assert cell.released
    script.items += [("ReturnPacket", (ABORTED,))]
    converse(cell, script.next_event)
    assert cell.done and cell.died is None and kernel.kinds()[-1] == ("evaluate", "sync")
    assert host.emitted == []


def test_an_administrator_can_have_the_kernel_ended() -> None:
    """``kill_after``: the old ladder, for hosts that prefer a free kernel to a kept one."""
    cell, host, kernel, _ = run_cell([("RKInterrupt", ())],
                                     escalation=Escalation(kill_after=15.0))
    start = kernel.actions[0][0]
    assert [(t - start, a, v) for t, a, v in kernel.actions] == [
        (0.0, "message", 3), (5.0, "message", 2), (15.0, "message", 1), (20.0, "kill", None)]
    assert cell.died == "the kernel did not end even after its processes were killed"
    assert not any(p.head == Symbol("InputNamePacket") for p in host.emitted)


def test_escalation_ends_when_the_killed_kernel_is_gone() -> None:
    cell, _, kernel, _ = run_cell([("RKInterrupt", ()), 20.5,
                                   ("LinkDied", ("the Wolfram kernel (pid 9) was killed",))],
                                  escalation=Escalation(kill_after=15.0))
    assert [a for _, a, _ in kernel.actions][-1] == "kill"
    assert cell.died == "the Wolfram kernel (pid 9) was killed"


def test_call_packet_is_answered_and_the_cell_goes_on() -> None:
    """The kernel blocks until its CallPacket gets one ReturnPacket: $Failed, not an abort."""
    cell, host, kernel, _ = run_cell([("CallPacket", (5, [1])),
                                      ret(3, {"line": 2, "text/plain": "x"})])
    assert kernel.kinds() == [("reply", Symbol("$Failed"))]
    assert "front end service" in host.emitted[0].args[0]
    assert host.emitted[-2:] == [packet("ReturnPacket", {"text/plain": "x"}),
                                 packet("InputNamePacket", "In[3]:= ")]
    assert cell.died is None and not cell.interrupted


def test_a_result_wstp_cannot_read_is_shown_and_the_kernel_goes_on() -> None:
    cell, host, kernel, _ = run_cell([("ReturnPacket", (wstp.UNDECODABLE,))], line=4)
    assert "could not be read" in host.emitted[0].args[0]
    assert host.emitted[-1] == packet("InputNamePacket", "In[4]:= ")
    assert kernel.kinds() == [("evaluate", "sync")] and cell.died is None


def test_kernel_quits_during_a_cell() -> None:
    cell, host, _, _ = run_cell([("TextPacket", ("bye\n",)),
                                 ("LinkDied", ("the Wolfram kernel exited",))])
    assert host.emitted == [packet("TextPacket", "bye")]
    assert cell.done and cell.died == "the Wolfram kernel exited"


def test_dialog_is_closed() -> None:
    _, host, kernel, _ = run_cell([("BeginDialogPacket", (1,)),
                                   ("InputNamePacket", ("In[3]:= ",)),
                                   ("EndDialogPacket", (1,)),
                                   ret(3, {"line": 2, "text/plain": "x"})])
    assert kernel.kinds() == [("enter_text", DIALOG_EXIT)]
    assert host.emitted[0].head == Symbol("TextPacket") and "Dialog" in host.emitted[0].args[0]
    assert host.emitted[-1] == packet("InputNamePacket", "In[3]:= ")


# -- dynamic output: temporary displays, Manipulate, values ----------------------------------


def display(display_id: str, bundle: dict[str, str] | None) -> tuple[str, tuple[Any, ...]]:
    """A helper's temporary display as the reader delivers it (to_python applied)."""
    return ("DisplayPacket", ([DISPLAY_TAG, display_id, bundle],))


def test_a_temporary_display_becomes_rkdisplay_in_order() -> None:
    """PrintTemporary/Monitor: the helper's DisplayPacket is the link's RKDisplay, in its
    place among Print and messages (a message whose text has not come is not split)."""
    _, host, kernel, _ = run_cell([
        ("TextPacket", ("before\n",)),
        display("d-1", {"text/plain": "[##..] 50%", "text/html": "<progress/>"}),
        ("MessagePacket", (Symbol("Power"), "infy")),
        ("TextPacket", ("Infinite expression 1/0 encountered.\n",)),
        display("d-1", None),
        ret(4, {"line": 3, "text/plain": "7"}),
    ])
    assert host.emitted == [
        packet("TextPacket", "before"),
        packet("RKDisplay", "d-1", {"text/plain": "[##..] 50%", "text/html": "<progress/>"}),
        packet("MessagePacket", "Power", "infy", "Infinite expression 1/0 encountered."),
        packet("RKDisplay", "d-1", None),
        packet("OutputNamePacket", "Out[3]= "),
        packet("ReturnPacket", {"text/plain": "7"}),
        packet("InputNamePacket", "In[4]:= "),
    ]
    assert kernel.actions == []


def test_packets_of_no_use_do_not_break_the_conversation() -> None:
    """A kernel's own DisplayPacket (PostScript), a malformed display, an unreadable packet
    and packets a front end has no use for are dropped; the cell goes on."""
    _, host, kernel, _ = run_cell([
        ("DisplayPacket", ("%!PS-Adobe-3.0",)),
        ("DisplayPacket", ([DISPLAY_TAG, 5, {"text/plain": "x"}],)),
        ("DisplayPacket", ()),
        ("DisplayEndPacket", ("",)),
        ("IllegalPacket", ("WSTP error 23",)),
        ("ReturnExpressionPacket", (1,)),
        ("Packet99", ()),
        ret(4, {"line": 3, "text/plain": "7"}),
    ])
    assert host.emitted == [packet("OutputNamePacket", "Out[3]= "),
                            packet("ReturnPacket", {"text/plain": "7"}),
                            packet("InputNamePacket", "In[4]:= ")]
    assert kernel.actions == []


def test_a_display_during_the_engines_own_request_is_not_shown() -> None:
    call, _ = run_call([display("t-1", {"text/plain": "x"}), ("ReturnPacket", (["Plot"],))])
    assert call.value == ["Plot"] and call.output == []


MANIPULATE_SPEC = {"id": "m-1", "controls": [
    {"name": "a", "label": "freq", "kind": "slider", "min": 1, "max": 5, "step": 1, "value": 2,
     "integer": True},
    {"name": "b", "label": "b", "kind": "checkbox", "value": False},
    {"name": "c", "label": "c", "kind": "choice", "labels": ["Red", "Blue"], "value": 1}],
    "continuous": False, "view": {"text/plain": "2"}}


def test_a_manipulate_result_carries_its_specification_as_json() -> None:
    """The helper gives the specification as data; the protocol wants it as JSON."""
    _, host, _, _ = run_cell([ret(4, {"line": 3, "text/plain": "2",
                                      MANIPULATE_MIME: MANIPULATE_SPEC})])
    bundle = host.emitted[1].args[0]
    assert bundle["text/plain"] == "2" and json.loads(bundle[MANIPULATE_MIME]) == MANIPULATE_SPEC


def run_expression(items: list[Any]) -> tuple[Expression, FakeHost, FakeKernel]:
    clock = FakeClock()
    script = Script(clock, items)
    kernel = FakeKernel(script)
    host = FakeHost()
    expression = Expression(host, kernel, clock, Escalation())
    converse(expression, script.next_event)
    return expression, host, kernel


def test_an_expression_answers_with_exactly_one_return_packet() -> None:
    """EvaluatePacket: output, then the value (at every depth as the link's EvaluatePacket
    gives it), and nothing after it: no Out[n], no In[n]."""
    view = {"text/plain": "0.25", "text/latex": "$$0.25$$"}
    expression, host, kernel = run_expression([
        ("TextPacket", ("in the view\n",)),
        display("t-2", {"text/plain": "wait"}),
        ("ReturnPacket", ({"value": view},))])
    assert host.emitted == [packet("TextPacket", "in the view"),
                            packet("RKDisplay", "t-2", {"text/plain": "wait"}),
                            packet("ReturnPacket", view)]
    assert expression.done and kernel.actions == []
    nested = Function(Symbol("Global`f"), Function(Symbol("List"), 1, Symbol("True")))
    _, host, _ = run_expression([("ReturnPacket", ({"value": nested},))])
    assert host.emitted == [packet("ReturnPacket", Function(Symbol("Global`f"), [1, True]))]


def test_an_expression_with_a_syntax_error_aborted_or_unreadable() -> None:
    _, host, _ = run_expression([("TextPacket", ("Syntax::sntxi: Incomplete expression\n",)),
                                 ("ReturnPacket", ({"syntax": 3},))])
    assert host.emitted[1:] == [packet("SyntaxPacket", 3), packet("ReturnPacket", FAILED)]
    expression, host, kernel = run_expression([("ReturnPacket", (ABORTED,))])
    assert host.emitted == [packet("ReturnPacket", ABORTED)]
    assert kernel.kinds() == [("evaluate", "sync")] and expression.done
    _, host, _ = run_expression([("ReturnPacket", (wstp.UNDECODABLE,))])
    assert "could not be read" in host.emitted[0].args[0]
    assert host.emitted[1:] == [packet("ReturnPacket", FAILED)]
    assert [p.head.name for p in host.emitted].count("InputNamePacket") == 0


def run_call(items: list[Any], timeout: float = 30.0, *,
             starting: bool = False) -> tuple[Call, FakeKernel]:
    clock = FakeClock()
    script = Script(clock, items)
    kernel = FakeKernel(script)
    call = Call(kernel, clock, Escalation(), timeout, starting=starting)
    converse(call, script.next_event)
    return call, kernel


def test_call_collects_output_and_value() -> None:
    call, kernel = run_call([("TextPacket", ("loading\n",)), ("ReturnPacket", ({"a": 1},))])
    assert (call.value, call.output, call.aborted, kernel.actions) == ({"a": 1}, ["loading"],
                                                                       False, [])


@pytest.mark.parametrize("question", [
    ("MenuPacket", (4, "Enter your activation key: ")),
    ("InputStringPacket", ("For automatic Web Activation enter your activation key",)),
    ("InputPacket", ("Password: ",)),
])
def test_a_question_during_start_is_a_licence_prompt_not_answered(question: Any) -> None:
    """Before its first answer a kernel asks only for its licence; "a" or $Aborted would be
    nonsense to the licence manager.  The kernel is told to terminate and the start fails
    with its question."""
    call, kernel = run_call([("TextPacket", ("Mathematica 14.3.0 Kernel\n",)), question],
                            starting=True)
    assert kernel.kinds() == [("message", 1)]
    assert call.prompt == question[1][-1].strip() and call.died is not None
    assert call.output == ["Mathematica 14.3.0 Kernel"]


def test_the_interrupt_menu_during_start_is_still_answered() -> None:
    call, kernel = run_call([("MenuPacket", (1, "Interrupt> ")), ("ReturnPacket", (ABORTED,))],
                            starting=True)
    assert kernel.kinds()[0] == ("answer", ABORT_CHOICE) and call.prompt is None


def test_call_is_aborted_after_its_timeout() -> None:
    call, kernel = run_call([3.0, ("ReturnPacket", (ABORTED,))], timeout=2.0)
    assert call.aborted and call.done and call.died is None
    assert kernel.kinds() == [("message", 3), ("evaluate", "sync")]
    assert kernel.actions[0][0] == pytest.approx(1002.0)


# -- licence failures, in the kernel's own words ------------------------------------------

# Verbatim kernel/wolframscript output, as quoted in public bug reports.
REAL_LICENCE_TEXTS = [
    # WolframResearch/AgentTools#165 (a 14.3 kernel started without activation)
    ("Mathematica 14.3.0 Kernel for Linux x86 (64-bit)\nCopyright 1988-2025 Wolfram Research, "
     "Inc.\n\nMathematica 14.3.0 Kernel cannot find a valid password.\n\nFor automatic Web "
     "Activation enter your activation key\n(enter return to skip Web Activation): ",
     "Mathematica 14.3.0 Kernel cannot find a valid password.", "activation"),
    # millejoh/emacs-ipython-notebook#613 (WolframKernel -script)
    ("No valid password found.", "No valid password found.", "activation"),
    # njpipeorgan/wolfram-language-notebook#3 (wolframscript)
    ("Your Wolfram Engine installation is not activated or is experiencing a license-related "
     "problem.\n\nPlease run wolframscript with the -activate option, and then try\n your "
     "original wolframscript command again.",
     "Your Wolfram Engine installation is not activated or is experiencing a license-related "
     "problem.", "activation"),
    ("The Wolfram Engine could not be activated using your Wolfram ID.",
     "The Wolfram Engine could not be activated using your Wolfram ID.", "activation"),
    # mmatera/iwolfram#17
    ("The product exited during an activation attempt because an error occurred.",
     "The product exited during an activation attempt because an error occurred.",
     "activation"),
]


@pytest.mark.parametrize(("text", "line", "kind"), REAL_LICENCE_TEXTS)
def test_real_licence_failures_are_recognised(text: str, line: str, kind: str) -> None:
    problem = licence_problem(text)
    assert problem is not None and problem[0] == line
    assert "activat" in problem[1]
    error = start_failure("/opt/w/WolframKernel", text, 1)
    assert line in str(error) and "/opt/w/WolframKernel -licenseinfo" in str(error)


def test_other_licence_wordings() -> None:
    """Not verbatim from a kernel (none was found in public reports): the wordings the
    patterns are meant to catch for expiry, the process limit and the licence server."""
    assert "expired" in licence_problem("Your license has expired.")[1]
    assert "in use" in licence_problem("Too many kernels are running for this license.")[1]
    assert "MathLM" in licence_problem("Unable to contact the MathLM license server.")[1]
    assert licence_problem("Segmentation fault (core dumped)") is None


def test_banner_then_exit_means_no_free_kernel_process() -> None:
    """WolframLanguageForJupyter#25: with every licensed process in use, the kernel "prints
    the usual header, then exits without a word"."""
    banner = ("Wolfram Language 12.0.0 Engine for Linux x86 (64-bit)\n"
              "Copyright 1988-2019 Wolfram Research, Inc.")
    error = str(start_failure("/opt/w/WolframKernel", banner, 0))
    assert "printed only its banner" in error and "-licenseinfo" in error and banner in error


def test_a_licence_prompt_is_explained_with_its_fix() -> None:
    error = prompt_failure("/opt/w/WolframKernel",
                           "For automatic Web Activation enter your activation key",
                           "Mathematica 14.3.0 Kernel cannot find a valid password.")
    text = str(error)
    assert error.code == LICENCE_PROMPT
    assert "asked “For automatic Web Activation enter your activation key”" in text
    assert "not activated" in text and "/opt/w/WolframKernel -licenseinfo" in text
    assert "cannot find a valid password" in text
    other = str(prompt_failure("/k", "Your choice? ", ""))
    assert "run `/k` once by hand" in other


def test_other_start_failures() -> None:
    assert "its last words:\nSegmentation fault" in str(
        start_failure("/k", "Segmentation fault", -11))
    assert "without a word" in str(start_failure("/k", "", 127))


# -- WolframEngine.start with fake kernels ------------------------------------------------


def test_create_engine_gives_the_wolfram_engine() -> None:
    assert isinstance(create_engine("wolfram", FakeHost(), {}), WolframEngine)


def test_start_with_a_missing_kernel_path_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "Wolfram/14.3/Executables/WolframKernel"
    eng = WolframEngine(FakeHost(), {"kernel_path": str(missing)})
    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        eng.start(30.0)
    assert time.monotonic() - started < 2.0
    assert str(missing) in str(error.value) and "does not exist" in str(error.value)
    assert "--kernel-path" in str(error.value)
    assert not eng.alive()


def test_requests_need_a_started_engine() -> None:
    eng = WolframEngine(FakeHost(), {})
    assert eng.complete("*") == [] and eng.inspect("f[x_]") is None  # refused before asking
    with pytest.raises(EngineError, match="not running"):
        eng.complete("Plo")
    eng.interrupt()  # idle: nothing to do
    eng.close()
    eng.close()


@pytest.fixture
def fake_installation(tmp_path: Path, fake_wstp: Path) -> Iterator[Callable[[str], Path]]:
    """Makes an installation whose kernel is ``script`` (Python) and whose libWSTP is the
    stand-in, whose WSActivate waits like a real listening link (until released)."""
    libraries: list[Path] = []

    def make(script: str) -> Path:
        root = tmp_path / "Wolfram/14.3"
        kernel = root / "Executables" / "WolframKernel"
        kernel.parent.mkdir(parents=True)
        kernel.write_text(f"#!{sys.executable}\n" + textwrap.dedent(script))
        kernel.chmod(0o755)
        kit = (root / "SystemFiles/Links/WSTP/DeveloperKit" / discovery.system_id()
               / "CompilerAdditions")
        kit.mkdir(parents=True)
        libraries.append(kit / "libWSTP64i4.so")
        shutil.copy(fake_wstp, libraries[-1])
        return kernel

    yield make
    for library in libraries:
        ctypes.CDLL(str(library)).fake_stop()  # release the activation left waiting


def test_start_reports_a_licence_failure_in_the_kernels_words(
    tmp_path: Path, fake_installation: Callable[[str], Path]
) -> None:
    args_file = tmp_path / "argv"
    kernel = fake_installation(f"""
        import sys
        open({str(args_file)!r}, "w").write("\\n".join(sys.argv[1:]))
        print("Mathematica 14.3.0 Kernel for Linux x86 (64-bit)")
        print("Copyright 1988-2025 Wolfram Research, Inc.")
        print()
        print("Mathematica 14.3.0 Kernel cannot find a valid password.")
        print()
        print("For automatic Web Activation enter your activation key")
        print("(enter return to skip Web Activation): ", end="", flush=True)
        sys.exit(1 if sys.stdin.read() == "" else 0)
    """)
    eng = WolframEngine(FakeHost(), {"kernel_path": str(kernel)})
    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        eng.start(30.0)
    assert time.monotonic() - started < 10.0
    text = str(error.value)
    assert "cannot find a valid password" in text and "-licenseinfo" in text
    assert str(kernel) in text
    assert args_file.read_text().split("\n") == [
        "-wstp", "-linkprotocol", "SharedMemory", "-linkconnect", "-linkname", "fake-link-name"]


def test_start_gives_up_on_a_kernel_that_never_connects(
    tmp_path: Path, fake_installation: Callable[[str], Path]
) -> None:
    pid_file = tmp_path / "pid"
    kernel = fake_installation(f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(600)
    """)
    eng = WolframEngine(FakeHost(), {"kernel_path": str(kernel)})
    with pytest.raises(EngineError) as error:
        eng.start(1.5)
    assert "did not connect within 1.5 s and was stopped" in str(error.value)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # WSActivate was never called on a link nobody came to (WSReady said so): no thread
    # blocked in it is left behind, and the link is closed.
    assert not [t for t in threading.enumerate() if t.name.startswith("wstp-activate")]
    assert ctypes.CDLL(str(kernel.parents[1] / LIBRARY)).fake_closes() == 1


def test_start_keeps_to_its_timeout_when_the_kernel_never_answers(
    tmp_path: Path, fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel that connects and then says nothing: the start ends at its timeout (the
    kernel killed), not after the 25 s of a cell's escalation."""
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    kernel = fake_installation("import time\ntime.sleep(600)\n")
    eng = WolframEngine(FakeHost(), {"kernel_path": str(kernel)})
    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        eng.start(2.0)
    assert time.monotonic() - started < 2.0 + 2.0
    assert "did not answer within the start timeout" in str(error.value)
    assert not eng.alive() and eng._proc is not None and eng._proc.poll() is not None


def test_a_licence_prompt_during_start_fails_it_with_the_kernels_words(
    fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    kernel = fake_installation("import time\ntime.sleep(600)\n")
    eng = WolframEngine(FakeHost(), {"kernel_path": str(kernel)})
    side = KernelSide(eng, kernel.parents[1] / LIBRARY)
    thread, outcome = in_thread(lambda: eng.start(20.0))
    side.wait_evaluation(1)
    messages = side.fake.fake_message_count()
    side.send("TextPacket", "Mathematica 14.3.0 Kernel cannot find a valid password.\n")
    side.send("InputPacket", "For automatic Web Activation enter your activation key")
    thread.join(10.0)
    error = outcome[0]
    assert isinstance(error, EngineError) and error.code == LICENCE_PROMPT
    assert "enter your activation key" in str(error) and "cannot find a valid password" \
        in str(error) and "-licenseinfo" in str(error)
    assert side.fake.fake_message(messages) == wstp.TERMINATE_MESSAGE
    assert side.fake.fake_last_answer() == b""  # nothing was answered
    assert not eng.alive()


def test_start_reports_a_banner_only_exit(fake_installation: Callable[[str], Path]) -> None:
    kernel = fake_installation("""
        print("Wolfram Language 14.0.0 Engine for Linux x86 (64-bit)")
        print("Copyright 1988-2023 Wolfram Research, Inc.")
    """)
    with pytest.raises(EngineError, match="printed only its banner"):
        WolframEngine(FakeHost(), {"kernel_path": str(kernel)}).start(30.0)


def test_start_with_kernel_args(
    tmp_path: Path, fake_installation: Callable[[str], Path]
) -> None:
    args_file = tmp_path / "argv"
    kernel = fake_installation(f"""
        import sys
        open({str(args_file)!r}, "w").write(" ".join(sys.argv[1:]))
        print("Segmentation fault")
        sys.exit(139)
    """)
    options = {"kernel_path": str(kernel), "kernel_args": ["-pwfile", "/x/mathpass"],
               "link_protocol": "TCPIP"}
    with pytest.raises(EngineError) as error:
        WolframEngine(FakeHost(), options).start(30.0)
    assert "exited with code 139" in str(error.value) and "Segmentation fault" in str(error.value)
    assert args_file.read_text().endswith("-linkprotocol TCPIP -linkconnect -linkname "
                                          "fake-link-name -pwfile /x/mathpass")


class KernelSide:
    """The test as the kernel: the stand-in library (FAKE_WSTP_KERNEL) takes what the engine
    sends, and the test puts the kernel's packets on the engine's link for its reader."""

    def __init__(self, eng: WolframEngine, library: Path) -> None:
        self.eng = eng
        self.fake = ctypes.CDLL(str(library))
        self.fake.fake_last_code.restype = ctypes.c_char_p
        self.fake.fake_last_answer.restype = ctypes.c_char_p
        self.fake.fake_last_head.restype = ctypes.c_char_p

    def send(self, name: str, *args: Any) -> None:
        link = self.eng._link
        assert link is not None
        with link.lock:
            link.put_packet(Function(Symbol(name), *args))

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10.0
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def nonce(self) -> str:
        """The link check's value, read where only the kernel's owner can: the environment of
        the kernel process the engine started."""
        assert self.eng._proc is not None
        environ = Path(f"/proc/{self.eng._proc.pid}/environ").read_bytes().split(b"\0")
        return next(v.split(b"=", 1)[1].decode() for v in environ
                    if v.startswith(NONCE_ENV.encode() + b"="))

    def wait_evaluation(self, count: int) -> str:
        self.wait_for(lambda: self.fake.fake_evaluations() >= count, f"evaluation {count}")
        return self.fake.fake_last_code().decode()


LIBRARY = Path("SystemFiles/Links/WSTP/DeveloperKit") / discovery.system_id() \
    / "CompilerAdditions/libWSTP64i4.so"


def started_engine(kernel: Path, options: dict[str, Any] | None = None,
                   ) -> tuple[WolframEngine, KernelSide, FakeHost]:
    """A WolframEngine started over the stand-in link, the test answering as the kernel."""
    host = FakeHost()
    eng = WolframEngine(host, {"kernel_path": str(kernel), **(options or {})})
    side = KernelSide(eng, kernel.parents[1] / LIBRARY)
    thread, outcome = in_thread(lambda: eng.start(20.0))
    side.wait_evaluation(1)
    side.send("ReturnPacket", side.nonce())
    side.wait_evaluation(2)
    side.send("ReturnPacket", association(version="14.3.0", systemID="Linux-x86-64", line=1))
    thread.join(10.0)
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    return eng, side, host


@pytest.fixture
def stand_in(fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
             ) -> Iterator[tuple[WolframEngine, KernelSide, FakeHost]]:
    """A started engine whose kernel side is the test (the stand-in library's kernel mode)."""
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    started = started_engine(fake_installation("import time\ntime.sleep(600)\n"))
    yield started
    started[0].close()


def association(**items: Any) -> Function:
    return Function(Symbol("Association"),
                    *(Function(Symbol("Rule"), k.replace("_", "/"), v) for k, v in items.items()))


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_engine_over_a_stand_in_link(
    fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """start, evaluate (Print, result), interrupt (abort message, $Aborted, synchronisation),
    complete, and the kernel's death, through the engine's threads and the ctypes binding."""
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    kernel = fake_installation("import time\ntime.sleep(600)\n")
    host = FakeHost()
    eng = WolframEngine(host, {"kernel_path": str(kernel)})
    side = KernelSide(eng, kernel.parents[1] / "SystemFiles/Links/WSTP/DeveloperKit"
                      / discovery.system_id() / "CompilerAdditions/libWSTP64i4.so")
    try:
        thread, outcome = in_thread(lambda: eng.start(20.0))
        assert side.wait_evaluation(1) == NONCE_ENV  # Environment["RK_WSTP_NONCE"] first
        side.send("InputNamePacket", "In[1]:= ")
        side.send("ReturnPacket", side.nonce())  # what only the started kernel knows
        assert side.wait_evaluation(2) == str(HELPER)  # then Get["…/RKJupyter.wl"]
        side.send("ReturnPacket", association(version="14.3.0 for Linux x86 (64-bit)",
                                              systemID="Linux-x86-64", line=1))
        thread.join(10.0)
        info = outcome[0]
        assert info.version == "14.3.0 for Linux x86 (64-bit)" and eng.alive()

        thread, outcome = in_thread(lambda: eng.evaluate('Print["hi"]; 1+1'))
        assert side.wait_evaluation(3) == 'Print["hi"]; 1+1'
        side.send("TextPacket", "hi\n")
        side.send("ReturnPacket", association(line=2, results=Function(
            Symbol("List"), association(line=1, text_plain="2"))))
        thread.join(10.0)
        assert outcome == [None]
        assert host.emitted == [packet("TextPacket", "hi"),
                                packet("OutputNamePacket", "Out[1]= "),
                                packet("ReturnPacket", {"text/plain": "2"}),
                                packet("InputNamePacket", "In[2]:= ")]

        host.emitted.clear()
        messages = side.fake.fake_message_count()
        side.fake.fake_set_line(3)
        thread, outcome = in_thread(lambda: eng.evaluate("Pause[100]"))
        side.wait_evaluation(4)
        eng.interrupt()
        side.wait_for(lambda: side.fake.fake_message_count() > messages, "the abort message")
        assert side.fake.fake_message(messages) == wstp.ABORT_MESSAGE
        side.send("ReturnPacket", Symbol("$Aborted"))  # the synchronisation is answered by C
        thread.join(10.0)
        assert outcome == [None]
        assert host.emitted == [packet("ReturnPacket", ABORTED),
                                packet("InputNamePacket", "In[3]:= ")]

        thread, outcome = in_thread(lambda: eng.complete("Plo"))
        assert side.wait_evaluation(5) == "Plo"
        side.send("ReturnPacket", Function(Symbol("List"), "Plot", "Plot3D"))
        thread.join(10.0)
        assert outcome == [["Plot", "Plot3D"]]

        os.kill(eng._proc.pid, signal.SIGKILL)
        side.wait_for(lambda: not eng.alive(), "the engine to notice the kernel's death")
        with pytest.raises(EngineError, match="was killed by signal SIGKILL"):
            eng.evaluate("1")
    finally:
        eng.close()
    assert not eng.alive()


@pytest.fixture
def spares(monkeypatch: pytest.MonkeyPatch) -> Iterator[spare.Spares]:
    """A pool of spares of the test's own, ended after it."""
    pool = spare.Spares()
    monkeypatch.setattr(spare, "SPARES", pool)
    yield pool
    pool.close()


LICENCE_FAILURE = """
    import sys
    print("Mathematica 14.3.0 Kernel cannot find a valid password.", flush=True)
    sys.exit(1)
"""


def test_a_warm_spare_reports_a_licence_failure_before_anyone_waits(
    fake_installation: Callable[[str], Path], spares: spare.Spares
) -> None:
    """warm_spare: the first engine starts as ever and a spare starts beside it; the spare's
    licence failure is what the next start raises, at once and once."""
    options = {"kernel_path": str(fake_installation(LICENCE_FAILURE)), "warm_spare": True}
    first = create_engine("wolfram", FakeHost(), options)
    assert isinstance(first, WolframEngine) and first.pid is None, "a plain, unstarted engine"
    deadline = time.monotonic() + 15
    while not spares._failed:
        assert time.monotonic() < deadline, "the spare never failed"
        time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        create_engine("wolfram", FakeHost(), options)
    assert time.monotonic() - started < 0.5
    assert "cannot find a valid password" in str(error.value)
    again = create_engine("wolfram", FakeHost(), options)  # said once: this one tries again
    assert isinstance(again, WolframEngine) and again.pid is None


def test_a_warm_spare_is_taken_started_and_replaced(
    fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
    spares: spare.Spares
) -> None:
    """The spare starts in the background (the test answers as its kernel); the next engine
    of the configuration is that started kernel, serving its own host, whose start returns
    at once; a new spare starts in its place; the agent's end ends the spares."""
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    kernel = fake_installation("import time\ntime.sleep(600)\n")
    options = {"kernel_path": str(kernel), "warm_spare": True, "start_timeout": 20}
    spares.replenish(options)
    [waiting] = spares._starting.values()
    side = KernelSide(waiting, kernel.parents[1] / LIBRARY)
    side.wait_evaluation(1)
    side.send("ReturnPacket", side.nonce())
    side.wait_evaluation(2)
    side.send("ReturnPacket", association(version="14.3.0", systemID="Linux-x86-64", line=1))
    side.wait_for(lambda: bool(spares._ready), "the spare to be ready")
    host = FakeHost()
    eng = create_engine("wolfram", host, options)
    assert eng is waiting and eng.host is host and eng.alive()
    started = time.monotonic()
    info = eng.start(20.0)
    assert time.monotonic() - started < 0.1
    assert info.version == "14.3.0" and info.extra["warm_spare"] is True
    assert spares._starting and not spares._ready, "a new spare is starting in its place"
    [replacement] = spares._starting.values()
    spares.close()
    eng.close()
    side.wait_for(lambda: not eng.alive(), "the taken engine to close")
    side.wait_for(lambda: replacement._closed, "the replacement spare to be ended")


def test_a_link_peer_that_is_not_the_started_kernel_gets_nothing(
    fake_installation: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process that connects to the listening link first (WSTP links do not
    authenticate, and the name is in ``ps``) cannot answer the check: the start fails with
    ``engine.link-impostor`` naming the cause, no cell or helper is sent, the kernel is ended."""
    monkeypatch.setenv("FAKE_WSTP_ACTIVATE", "ok")
    monkeypatch.setenv("FAKE_WSTP_KERNEL", "1")
    kernel = fake_installation("import time\ntime.sleep(600)\n")
    eng = WolframEngine(FakeHost(), {"kernel_path": str(kernel)})
    side = KernelSide(eng, kernel.parents[1] / "SystemFiles/Links/WSTP/DeveloperKit"
                      / discovery.system_id() / "CompilerAdditions/libWSTP64i4.so")
    try:
        thread, outcome = in_thread(lambda: eng.start(20.0))
        assert side.wait_evaluation(1) == NONCE_ENV
        pid = eng._proc.pid
        side.send("ReturnPacket", "0" * 32)  # a guess: an impostor cannot read the kernel's
        thread.join(10.0)                    # environment
        error = outcome[0]
        assert isinstance(error, EngineError) and error.code == IMPOSTOR
        assert "not the kernel rk_jupyter started" in error.cause and "start the kernel again" \
            in error.fix
        assert side.fake.fake_evaluations() == 1  # the helper (and any cell) never went out
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        eng.close()


def test_abort_reaches_the_kernel_while_a_read_holds_the_link(
    stand_in: tuple[WolframEngine, KernelSide, FakeHost],
) -> None:
    """WSPutMessage is meant for another thread while one reads: an abort does not wait for
    the link's lock, which a read that blocks can keep."""
    eng, side, host = stand_in
    try:
        thread, outcome = in_thread(lambda: eng.evaluate("Pause[100]"))
        side.wait_evaluation(3)
        messages = side.fake.fake_message_count()
        assert eng._link is not None
        with eng._link.lock:  # a read that does not end
            eng.interrupt()
            side.wait_for(lambda: side.fake.fake_message_count() > messages,
                          "the abort message, with the link's lock held")
        assert side.fake.fake_message(messages) == wstp.ABORT_MESSAGE
        side.send("ReturnPacket", Symbol("$Aborted"))
        thread.join(10.0)
        assert outcome == [None] and host.emitted[0] == packet("ReturnPacket", ABORTED)
    finally:
        eng.close()


def test_a_released_cell_keeps_the_kernel_and_a_second_interrupt_ends_it(
    stand_in: tuple[WolframEngine, KernelSide, FakeHost],
) -> None:
    """The kernel answers no interrupt: the cell ends with "not answering" (the kernel keeps
    running); the next cell waits for the late answer and then runs; when it happens again,
    an interrupt while idle (the second) terminates the kernel, then kills it."""
    eng, side, host = stand_in
    eng.escalation = Escalation(interrupt_after=0.2, release_after=0.6, end_grace=0.5)
    try:
        thread, outcome = in_thread(lambda: eng.evaluate("LinearSolve[huge]"))
        side.wait_evaluation(3)
        eng.interrupt()
        thread.join(10.0)
        error = outcome[0]
        assert isinstance(error, EngineError) and error.code == NOT_ANSWERING
        assert "not answering the interrupt" in error.cause and "interrupt again" in error.fix
        assert eng.alive() and eng.complete("Plo") == []  # busy: no answer, no wait
        # The next cell first takes the late answer of the released one, then runs.
        thread, outcome = in_thread(lambda: eng.evaluate("1+1"))
        time.sleep(0.3)
        assert side.fake.fake_evaluations() == 3  # not sent yet: the kernel is still busy
        host.emitted.clear()
        side.send("ReturnPacket", Symbol("$Aborted"))  # late; the sync is answered by C
        side.wait_evaluation(4)
        side.send("ReturnPacket", association(line=4, results=Function(Symbol("List"))))
        thread.join(10.0)
        assert outcome == [None] and host.emitted == [packet("InputNamePacket", "In[4]:= ")]
        # Released again; this time the user interrupts while no cell runs.
        thread, outcome = in_thread(lambda: eng.evaluate("LinearSolve[huge]"))
        side.wait_evaluation(5)
        eng.interrupt()
        thread.join(10.0)
        assert outcome[0].code == NOT_ANSWERING
        messages = side.fake.fake_message_count()
        eng.interrupt()
        side.wait_for(lambda: side.fake.fake_message_count() > messages, "terminate")
        assert side.fake.fake_message(messages) == wstp.TERMINATE_MESSAGE
        side.wait_for(lambda: not eng.alive(), "the kernel to be killed")
        assert eng._proc is not None and exit_status(eng._proc) == -signal.SIGKILL
    finally:
        eng.close()


def test_a_bignum_result_leaves_the_engine_alive(
    stand_in: tuple[WolframEngine, KernelSide, FakeHost],
) -> None:
    eng, side, host = stand_in
    try:
        thread, outcome = in_thread(lambda: eng.evaluate("Throw[2^70]"))
        side.wait_evaluation(3)
        side.fake.fake_put_bignum_return()
        thread.join(10.0)
        assert outcome == [None] and eng.alive()
        assert "could not be read" in host.emitted[0].args[0]
        assert host.emitted[-1].head == Symbol("InputNamePacket")
    finally:
        eng.close()


def test_displays_and_a_manipulate_view_over_the_stand_in_link(
    stand_in: tuple[WolframEngine, KernelSide, FakeHost],
) -> None:
    """Through the reader thread and the ctypes binding: the helper's DisplayPacket is the
    link's RKDisplay (a kernel's own DisplayPacket and an unreadable packet are dropped, the
    cell goes on); a Manipulate result's specification arrives as JSON; its view is asked
    with the protocol's EvaluatePacket text, sent to RKJupyter`EvaluateExpression, and
    answered by one ReturnPacket with the view's bundle."""
    eng, side, host = stand_in
    lst = Symbol("List")
    try:
        thread, outcome = in_thread(lambda: eng.evaluate("Monitor[Pause[1]; 7, i]"))
        assert side.wait_evaluation(3) == "Monitor[Pause[1]; 7, i]"
        assert side.fake.fake_last_head() == b"RKJupyter`Evaluate"
        side.send("DisplayPacket", Function(lst, "RKDisplay", "d-1", association(text_plain="1")))
        side.send("DisplayPacket", "%!PS-Adobe-3.0")  # a kernel's own: of no use here
        side.send("NoSuchPacket", 1)  # WSNextPacket: ILLEGALPKT
        side.send("DisplayPacket", Function(lst, "RKDisplay", "d-1", Symbol("Null")))
        spec = Function(Symbol("Association"),
                        Function(Symbol("Rule"), "id", "m-7"),
                        Function(Symbol("Rule"), "controls", Function(lst, association(
                            name="b", label="b", kind="checkbox", value=Symbol("True")))),
                        Function(Symbol("Rule"), "continuous", Symbol("False")),
                        Function(Symbol("Rule"), "view", association(text_plain="7")))
        result = Function(Symbol("Association"), Function(Symbol("Rule"), "line", 1),
                          Function(Symbol("Rule"), "text/plain", "7"),
                          Function(Symbol("Rule"), MANIPULATE_MIME, spec))
        side.send("ReturnPacket", association(line=2, results=Function(lst, result)))
        thread.join(10.0)
        assert outcome == [None]
        assert host.emitted[:2] == [packet("RKDisplay", "d-1", {"text/plain": "1"}),
                                    packet("RKDisplay", "d-1", None)]
        bundle = host.emitted[3].args[0]
        assert json.loads(bundle[MANIPULATE_MIME]) == {
            "id": "m-7", "controls": [{"name": "b", "label": "b", "kind": "checkbox",
                                       "value": True}],
            "continuous": False, "view": {"text/plain": "7"}}
        assert host.emitted[-1] == packet("InputNamePacket", "In[2]:= ")

        host.emitted.clear()
        request = manipulate_request("m-7", [False])
        thread, outcome = in_thread(lambda: eng.evaluate_expression(request))
        assert side.wait_evaluation(4) == request
        assert side.fake.fake_last_head() == b"RKJupyter`EvaluateExpression"
        side.send("TextPacket", "from the view\n")
        side.send("ReturnPacket", association(value=association(text_plain="0")))
        thread.join(10.0)
        assert outcome == [None]
        assert host.emitted == [packet("TextPacket", "from the view"),
                                packet("ReturnPacket", {"text/plain": "0"})]
        assert eng.alive()
    finally:
        eng.close()


# -- the helper package under Mathics3 ----------------------------------------------------


@pytest.fixture(scope="module")
def mathics() -> Any:
    pytest.importorskip("mathics")
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.session import MathicsSession

    import_and_load_builtins()
    session = MathicsSession()
    session.evaluate(f'Get["{HELPER}"]')
    assert session.evaluation.out == []  # it parses and loads without a message
    return session


def from_mathics(expr: Any) -> Any:
    """A Mathics3 result as Python data (String/Integer/List/Association/Symbol)."""
    head = expr.get_head_name()
    if head == "System`List":
        return [from_mathics(e) for e in expr.elements]
    if head == "System`Association":
        return {from_mathics(r.elements[0]): from_mathics(r.elements[1]) for r in expr.elements}
    if hasattr(expr, "value"):
        return expr.value
    return expr.get_name() if hasattr(expr, "get_name") else str(expr)


def evaluate_cell(session: Any, code: str) -> tuple[Any, list[str]]:
    session.evaluation.out.clear()
    escaped = code.replace("\\", "\\\\").replace('"', '\\"')
    value = from_mathics(session.evaluate(f'RKJupyter`Evaluate["{escaped}"]'))
    return value, [str(out.text) for out in session.evaluation.out]


def test_helper_evaluates_cells_in_mathics(mathics: Any) -> None:
    mathics.evaluate("$Line = 1")
    assert evaluate_cell(mathics, "1+1") == (
        {"line": 2, "results": [{"line": 1, "text/plain": "2"}]}, [])
    value, _ = evaluate_cell(mathics, "x = 5;\ny = x^2\n\ny/3")
    assert value == {"line": 3, "results": [{"line": 2, "text/plain": "25 / 3",
                                             "text/latex": "$$\\frac{25}{3}$$"}]}
    assert from_mathics(mathics.evaluate("{Out[2] == 25/3, $Line}")) == [True, 3]
    value, said = evaluate_cell(mathics, 'Print["hi"]; 1/0')
    assert said[0] == "hi" and "Infinite expression" in said[1]
    assert value["line"] == 4 and value["results"][0]["text/plain"] == "ComplexInfinity"
    assert evaluate_cell(mathics, 'Print["only"]') == ({"line": 5, "results": []}, ["only"])
    assert evaluate_cell(mathics, "")[0] == {"line": 5, "results": []}  # takes no line
    assert evaluate_cell(mathics, '"str"')[0]["results"][0]["text/plain"] == "str"
    assert "text/latex" not in evaluate_cell(mathics, "{1, 2}")[0]["results"][0]


def test_helper_reports_syntax_errors_in_mathics(mathics: Any) -> None:
    mathics.evaluate("$Line = 10")
    value, said = evaluate_cell(mathics, "a = 1\nf[1,")
    # Nothing was evaluated, the line is not used, and the position is the end of the cell
    # (Mathics3 has no SyntaxLength; a Wolfram kernel points at the error itself).
    assert value == {"line": 10, "results": [], "syntax": 11}
    assert len(said) == 1 and "Incomplete expression" in said[0]
    assert from_mathics(mathics.evaluate("ValueQ[a]")) is not True


def test_helper_graphics_completion_inspection_in_mathics(mathics: Any) -> None:
    value, _ = evaluate_cell(mathics, "Graphics[{Disk[]}]")
    result = value["results"][0]
    assert result["text/plain"] == "-Graphics-" and "<svg" in result["image/svg+xml"]
    # No front end (Mathics3 has no UsingFrontEnd and cannot export Graphics3D): a note.
    result = evaluate_cell(mathics, "Graphics3D[{Sphere[]}]")[0]["results"][0]
    assert result["text/plain"].startswith("-Graphics3D-\n(not drawn")
    assert set(result) == {"line", "text/plain"}
    assert "Plot" in from_mathics(mathics.evaluate('RKJupyter`Complete["Plo"]'))
    assert from_mathics(mathics.evaluate('RKJupyter`Inspect["Plus"]'))["text/plain"]
    assert from_mathics(mathics.evaluate('RKJupyter`Inspect["NoSuchSymbol123"]')) == "System`Null"
    info = from_mathics(mathics.evaluate("RKJupyter`Info[]"))
    assert set(info) == {"version", "versionNumber", "systemID", "processID", "line"}
    # Nothing of the helper shadows System` or lands on $ContextPath.
    assert "RKJupyter`" not in from_mathics(mathics.evaluate("$ContextPath"))
    assert from_mathics(mathics.evaluate("Context[Evaluate]")) == "System`"


def test_helper_package_is_written_out_when_the_agent_runs_from_its_zipapp(tmp_path) -> None:
    """Over ssh the agent runs from a zipapp, where RKJupyter.wl is no file a kernel can Get."""
    from rk_jupyter.provisioning.ssh.deploy import agent_zipapp

    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(agent_zipapp().data)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from rk_jupyter.agent.engines.wolfram.engine import helper_file; "
            "print(helper_file())")
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-I", "-c", code, str(pyz)], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    written = Path(out)
    assert written.parent == tmp_path / "home" / ".cache" / "rk_jupyter"
    assert written.read_bytes() == engine.HELPER.read_bytes()


def test_a_package_loaded_on_one_line_is_used_on_the_next(mathics: Any, tmp_path: Path) -> None:
    """The use that per-line parsing is for.  On a Wolfram kernel, parsing the second line
    before Get ran creates Global`rkPkgSquare, which shadows the package's (::shdw) and
    leaves the call unevaluated; Mathics3 creates symbols only when it evaluates, so here
    this passes either way (the parse order itself is tested below, and the doctor's
    ``package`` step checks this on a Wolfram host)."""
    package = tmp_path / "RKPkg.wl"
    package.write_text('BeginPackage["RKPkg`"]\nrkPkgSquare::usage = "rkPkgSquare[x]"\n'
                       'Begin["`Private`"]\nrkPkgSquare[x_] := x^2 + 1\nEnd[]\nEndPackage[]\n')
    line = from_mathics(mathics.evaluate("$Line = 20"))
    value, said = evaluate_cell(mathics, f'Get["{package}"]\nrkPkgSquare[3]')
    assert value == {"line": line + 1, "results": [{"line": line, "text/plain": "10"}]}, said
    assert said == []
    assert from_mathics(mathics.evaluate("Context[rkPkgSquare]")) == "RKPkg`"


def test_an_uncaught_throw_is_held_as_at_top_level(mathics: Any) -> None:
    """An uncaught Throw (whose bignum once reached the link and "killed" the kernel) gives
    Throw::nocatch and Hold[Throw[v]], with Out[n] and $Line as for any cell."""
    line = from_mathics(mathics.evaluate("$Line = 30"))
    value, said = evaluate_cell(mathics, "x0 = 1;\nThrow[2^70]\nx0 = 2")
    assert value["line"] == line + 1
    assert value["results"][0]["text/plain"] == "Hold[Throw[1180591620717411303424]]"
    assert said == ["Uncaught Throw[1180591620717411303424] returned to top level."]
    assert from_mathics(mathics.evaluate(f"{{x0, $Line, Out[{line}] === Hold[Throw[{2**70}]]}}")) \
        == [1, line + 1, True]
    value, _ = evaluate_cell(mathics, "Throw[7, rkTag]")
    # A kernel gives Hold[Throw[7, rkTag]]; Mathics3's Catch[e] also catches tagged throws.
    assert value["results"][0]["text/plain"].startswith("Hold[Throw[7")
    assert evaluate_cell(mathics, "Catch[Throw[5]]")[0]["results"][0]["text/plain"] == "5"


@pytest.fixture(scope="module")
def mathics_kernelish() -> Any:
    """Mathics3 with what it lacks of a kernel's main-loop state and front-end hooks, made
    as System` symbols before the helper loads (so that the helper's names are these):
    $MessageList and MessageList, $Output and $Messages as lists of stand-in streams, and
    a UsingFrontEnd that fails at once and counts its calls."""
    pytest.importorskip("mathics")
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.session import MathicsSession

    import_and_load_builtins()
    session = MathicsSession()
    session.evaluate('System`$MessageList = {}; System`MessageList[0] = {}; '
                     'System`$Output = {rkOut}; System`$Messages = {rkMessages}; '
                     'rkProbes = 0; SetAttributes[System`UsingFrontEnd, HoldAll]; '
                     'System`UsingFrontEnd[e_] := (rkProbes++; $Failed)')
    session.evaluate(f'Get["{HELPER}"]')
    assert session.evaluation.out == []
    return session


def test_each_line_is_parsed_just_before_it_runs(mathics_kernelish: Any) -> None:
    """The helper's parse (ToExpression, which creates symbols in a Wolfram kernel) is
    watched: when the first line of a cell runs, only that line has been parsed.  (Mathics3
    itself cannot show the difference: its ToExpression[s, InputForm, HoldComplete]
    evaluates as it parses.)"""
    session = mathics_kernelish
    session.evaluate('rkParsed = {}; RKJupyter`Private`parse[s_String] := '
                     '(AppendTo[rkParsed, s]; ToExpression[s, InputForm, HoldComplete])')
    value, _ = evaluate_cell(session, "rkAtFirst = rkParsed;\nrkSecond = 2")
    assert value["results"][0]["text/plain"] == "2"
    assert from_mathics(session.evaluate("rkAtFirst")) == ["rkAtFirst = rkParsed;"]
    assert from_mathics(session.evaluate("rkParsed")) == ["rkAtFirst = rkParsed;",
                                                          "rkSecond = 2"]


def test_each_cell_starts_with_no_messages(mathics_kernelish: Any) -> None:
    """EvaluatePacket bypasses the main loop that empties $MessageList between inputs; left
    full, General::stop silences a message for the whole session after three cells."""
    session = mathics_kernelish
    session.evaluate("$MessageList = {HoldForm[Power::infy], HoldForm[Power::infy], "
                     "HoldForm[Power::infy]}")
    line = from_mathics(session.evaluate("$Line = 5"))
    value, _ = evaluate_cell(session, 'Message[General::rkm]; Length[$MessageList]')
    assert value["results"][0]["text/plain"] in ("0", "1")  # none of the earlier three
    assert from_mathics(session.evaluate(f"ListQ[MessageList[{line}]]")) is True


def test_print_and_message_streams_are_one_line_and_unicode(mathics_kernelish: Any) -> None:
    assert from_mathics(mathics_kernelish.evaluate(
        "({PageWidth, CharacterEncoding} /. Options[#] & /@ {rkOut, rkMessages}) === "
        '{{Infinity, "Unicode"}, {Infinity, "Unicode"}}')) is True


def test_a_front_end_is_probed_once_and_its_failure_remembered(mathics_kernelish: Any) -> None:
    """Where no front end comes up, the first picture probes (UsingFrontEnd[$FrontEnd]) and
    fails; the second is text at once, with the reason, without trying again."""
    session = mathics_kernelish
    for _ in range(2):
        result = evaluate_cell(session, "Graphics[{Disk[]}]")[0]["results"][0]
        assert set(result) == {"line", "text/plain"}
        assert "not drawn: a front end could not be launched" in result["text/plain"]
    assert from_mathics(session.evaluate("rkProbes")) == 1


# -- the helper's dynamic output under Mathics3 ----------------------------------------------


@pytest.fixture(scope="module")
def mathics_dynamic() -> Any:
    """Mathics3 with the System` names the helper's dynamic output uses (a kernel has them;
    Mathics3 10 has none), made before the helper loads so that its names are these, and
    Manipulate and Monitor HoldAll as in a kernel.  The helper's displays, which a kernel
    writes on $ParentLink, are collected in rkSent."""
    pytest.importorskip("mathics")
    from mathics.core.load_builtin import import_and_load_builtins
    from mathics.session import MathicsSession

    import_and_load_builtins()
    session = MathicsSession()
    session.evaluate("{System`Manipulate, System`Monitor, System`PrintTemporary, "
                     "System`ProgressIndicator, System`ContinuousAction, System`DisplayPacket}; "
                     "SetAttributes[System`Manipulate, HoldAll]; "
                     "SetAttributes[System`Monitor, HoldAll]")
    session.evaluate(f'Get["{HELPER}"]')
    assert session.evaluation.out == []
    session.evaluate("rkSent = {}; RKJupyter`Private`writeDisplay[p_] := AppendTo[rkSent, p]")
    return session


def from_link(expr: Any) -> Any:
    """A Mathics3 value as the engine's reader would deliver it (True/False/Null as Python)."""
    value = from_mathics(expr)
    if isinstance(value, list):
        return [from_link(e) for e in expr.elements]
    if isinstance(value, dict):
        return {from_mathics(r.elements[0]): from_link(r.elements[1]) for r in expr.elements}
    return {"System`True": True, "System`False": False, "System`Null": None}.get(value, value) \
        if isinstance(value, str) and value.startswith("System`") else value


def sent_displays(session: Any) -> list[Any]:
    """The displays the helper wrote since the last call, as (id kind, bundle or None)."""
    sent = session.evaluate("rkSent")
    session.evaluate("rkSent = {}")
    displays = []
    for item in sent.elements:
        assert item.get_head_name() == "System`DisplayPacket"
        tag, display_id, bundle = from_link(item.elements[0])
        assert tag == DISPLAY_TAG
        displays.append((display_id, bundle))
    return displays


def manipulate_cell(session: Any, code: str) -> tuple[dict[str, str], list[str]]:
    """A cell's only result bundle as the engine emits it (result_bundle), and its output."""
    session.evaluation.out.clear()
    escaped = code.replace("\\", "\\\\").replace('"', '\\"')
    value = from_link(session.evaluate(f'RKJupyter`Evaluate["{escaped}"]'))
    (result,) = value["results"]
    return result_bundle(result), [str(out.text) for out in session.evaluation.out]


def view(session: Any, manipulate_id: str, values: list[Any]) -> tuple[Any, list[str]]:
    """The front end's request, as the engine sends it (EvaluateExpression of the text)."""
    session.evaluation.out.clear()
    text = manipulate_request(manipulate_id, values).replace('"', '\\"')
    value = from_link(session.evaluate(f'RKJupyter`EvaluateExpression["{text}"]'))
    return value, [str(out.text) for out in session.evaluation.out]


def test_helper_manipulate_result_and_its_views(mathics_dynamic: Any) -> None:
    """Each control kind of the Mathics3 engine's Manipulate, ContinuousAction, an option
    that is accepted and ignored, the first view, and views at other values through the
    engine's EvaluatePacket text, with With's scoping (the global a is untouched)."""
    session = mathics_dynamic
    session.evaluate("a = 100")
    bundle, said = manipulate_cell(session, (
        'Manipulate[a^2 + If[b, 100, 0] + c, {{a, 2, "freq"}, 1, 5, 1}, {b, {True, False}}, '
        '{{c, 20}, {10, 20, 30}}, {d, 0, 1/2}, ContinuousAction -> False, '
        'SaveDefinitions -> True]'))
    assert said == []
    spec = json.loads(bundle[MANIPULATE_MIME])
    assert spec["id"].startswith("m-") and spec["continuous"] is False
    assert spec["controls"] == [
        {"name": "a", "label": "freq", "kind": "slider", "min": 1, "max": 5, "step": 1,
         "value": 2, "integer": True},
        {"name": "b", "label": "b", "kind": "checkbox", "value": True},
        {"name": "c", "label": "c", "kind": "choice", "labels": ["10", "20", "30"], "value": 2},
        {"name": "d", "label": "d", "kind": "slider", "min": 0, "max": 0.5, "step": None,
         "value": 0, "integer": False}]
    assert spec["view"] == {"text/plain": "124"} and bundle["text/plain"] == "124"
    assert view(session, spec["id"], [3, False, 3, 0.25]) == ({"value": {"text/plain": "39"}},
                                                               [])
    assert view(session, spec["id"], [5, True, 9, 0.0])[0] == {"value": {"text/plain": "155"}}
    assert from_mathics(session.evaluate("a")) == 100
    # Messages of a view reach the user, every time (each view starts with no messages).
    bundle, _ = manipulate_cell(session, "Manipulate[1/x, {x, 0, 1}]")
    manipulate_id = json.loads(bundle[MANIPULATE_MIME])["id"]
    for _ in range(4):
        value, said = view(session, manipulate_id, [0])
        assert value == {"value": {"text/plain": "ComplexInfinity"}}
        assert len(said) == 1 and "Infinite expression" in said[0]


def test_helper_manipulate_that_is_not_live(mathics_dynamic: Any) -> None:
    """A control it cannot read gives Manipulate::vsform and the Manipulate as text; one
    inside another expression is left alone; a forgotten (or unknown) one says so."""
    session = mathics_dynamic
    bundle, said = manipulate_cell(session, "Manipulate[x, {x}]")
    assert MANIPULATE_MIME not in bundle and bundle["text/plain"] == "Manipulate[x, {x}]"
    assert said == ["Manipulate argument {x} does not have the correct form for a variable "
                    "specification."]
    assert manipulate_cell(session, "Manipulate[Sin, {Sin, 0, 1}]")[1][0].startswith(
        "Manipulate argument")  # a System` symbol is no control
    bundle, said = manipulate_cell(session, "{Manipulate[x, {x, 0, 1}]}")
    assert MANIPULATE_MIME not in bundle and said == []
    value, said = view(session, "m-none", [1])
    assert value == {"value": {}} and said == [
        "This Manipulate's engine has ended or forgotten it; evaluate its cell again."]
    session.evaluate("RKJupyter`Private`$keep = 2")
    try:
        ids = [json.loads(manipulate_cell(session, f"Manipulate[x + {i}, {{x, 0, 1}}]")[0]
                          [MANIPULATE_MIME])["id"] for i in range(3)]
        assert view(session, ids[0], [1])[1][0].startswith("This Manipulate's engine")
        assert view(session, ids[2], [1])[0] == {"value": {"text/plain": "3"}}
        assert view(session, ids[2], [1, 2])[1][0].startswith("This Manipulate's engine")
        assert from_mathics(session.evaluate("Length[RKJupyter`Private`$kept]")) == 2
    finally:
        session.evaluate("RKJupyter`Private`$keep = 200")


def test_helper_manipulate_result_through_the_engines_conversation(
    mathics_dynamic: Any,
) -> None:
    """The helper's answer for a Manipulate cell, fed to the engine's Cell as the kernel's
    ReturnPacket: the emitted bundle holds the specification as JSON."""
    session = mathics_dynamic
    value = from_link(session.evaluate(
        'RKJupyter`Evaluate["Manipulate[n!, {n, {1, 2, 3}}]"]'))
    _, host, _, _ = run_cell([("ReturnPacket", (value,))])
    bundle = host.emitted[1].args[0]
    assert json.loads(bundle[MANIPULATE_MIME])["controls"] == [
        {"name": "n", "label": "n", "kind": "choice", "labels": ["1", "2", "3"], "value": 1}]
    assert bundle["text/plain"] == "1"


def test_helper_temporary_displays(mathics_dynamic: Any) -> None:
    """PrintTemporary shows and returns Null; Monitor shows its expression, refreshes it only
    when it changed, and removes it when its expression ends, also when aborted; outside a
    cell the kernel's own PrintTemporary is untouched."""
    session = mathics_dynamic
    sent_displays(session)
    value, _ = evaluate_cell(session, 'PrintTemporary["wait"]; PrintTemporary[1, 2]')
    assert value["results"] == []
    (first, wait), (second, row) = sent_displays(session)
    assert first.startswith("t-") and first != second
    assert wait == {"text/plain": "wait"} and row["text/plain"] == "12"

    value, _ = evaluate_cell(session, "Monitor[Do[k, {k, 3}]; 7, ProgressIndicator[k, {0, 3}]]")
    assert value["results"][0]["text/plain"] == "7"
    (shown_id, shown), (removed_id, removed) = sent_displays(session)
    assert shown_id.startswith("d-") and removed_id == shown_id and removed is None
    assert shown["text/html"].startswith('<progress class="rk-progress" value="0.0000"')

    # The refresh (a scheduled task's work in a kernel; Mathics3 has no tasks) sends a
    # display only when it changed.
    session.evaluate("rkMon = 1; RKJupyter`Private`refresh[\"d-x\", Hold[rkMon]]; "
                     "RKJupyter`Private`refresh[\"d-x\", Hold[rkMon]]; rkMon = 2; "
                     "RKJupyter`Private`refresh[\"d-x\", Hold[rkMon]]")
    assert sent_displays(session) == [("d-x", {"text/plain": "1"}), ("d-x", {"text/plain": "2"})]
    assert from_mathics(session.evaluate(
        'RKJupyter`Private`startRefresh["d-x", Hold[rkMon]]')) == "System`Null"

    session.evaluation.out.clear()
    with pytest.raises(Exception):  # noqa: B017 -- Mathics3's abort leaves the session
        session.evaluate('RKJupyter`Evaluate["Monitor[Abort[], rkMon]"]')
    (_, shown), (_, removed) = sent_displays(session)
    assert shown == {"text/plain": "2"} and removed is None

    session.evaluate("PrintTemporary[3]")
    assert sent_displays(session) == []


PROGRESS = [  # as the Mathics3 engine draws them (dynamic.progress_bundle)
    ("ProgressIndicator[0.4]", "[########............] 40%",
     '<progress class="rk-progress" value="0.4000" max="1">40%</progress>'),
    ("ProgressIndicator[3, {1, 11}]", "[####................] 20%",
     '<progress class="rk-progress" value="0.2000" max="1">20%</progress>'),
    ("ProgressIndicator[2/3]", "[#############.......] 67%",
     '<progress class="rk-progress" value="0.6667" max="1">67%</progress>'),
    ("ProgressIndicator[9, {0, 4}]", "[####################] 100%",
     '<progress class="rk-progress" value="1.0000" max="1">100%</progress>'),
    ("ProgressIndicator[rkUnset, {0, 4}]", "[....................] 0%",
     '<progress class="rk-progress" value="0.0000" max="1">0%</progress>'),
    ("ProgressIndicator[Indeterminate]", "[~~~~~~~~~~~~~~~~~~~~]",
     '<progress class="rk-progress"></progress>'),
    ("ProgressIndicator[1, {rkA, 2}]", "ProgressIndicator[1, {rkA, 2}]", None),
    ("ProgressIndicator[1, {2, 1}]", "ProgressIndicator[1, {2, 1}]", None),
]


@pytest.mark.parametrize("code, text, html", PROGRESS)
def test_helper_progress_indicator(mathics_dynamic: Any, code: str, text: str,
                                   html: str | None) -> None:
    result = evaluate_cell(mathics_dynamic, code)[0]["results"][0]
    assert result["text/plain"] == text and result.get("text/html") == html
    try:  # the Mathics3 engine's own drawing, where it is there to compare with
        from rk_jupyter.agent.engines.mathics.dynamic import progress_bundle
    except ImportError:
        return
    expected = progress_bundle(mathics_dynamic.evaluate(code))
    assert (expected or {}).get("text/html") == html
    if expected:
        assert expected["text/plain"] == text

"""The Jupyter project's own kernel conformance suite (``jupyter_kernel_test``) against rk
kernels, started by jupyter_client as JupyterLab starts them: rk-local, and a kernel over the
SSH test bed.  Every optional test has its sample (``test_clear_output``: PrintTemporary's
output is removed when the cell ends, by clear_output)."""

from __future__ import annotations

import jupyter_kernel_test
import pytest

from rk_jupyter import kernelspec

from sshbed import SSHBed


class WolframLanguageSamples(jupyter_kernel_test.KernelTests):
    """The samples, in Wolfram Language as a notebook user writes it."""

    __test__ = False  # a base: only the subclasses that name a kernel run

    language_name = "wolfram-language"
    file_extension = ".wl"
    code_hello_world = 'Print["hello, world"]'
    code_stderr = "1/0"  # Power::infy, a message: stderr
    completion_samples = [{"text": "FactorIntege", "matches": {"FactorInteger"}}]
    complete_code_samples = ["1 + 1", "f[x_] := x^2", "Print[\"a\"]\nPrint[\"b\"]"]
    incomplete_code_samples = ["f[1,", "{1, 2", "Module[{x},"]
    invalid_code_samples = ["f[1]]", "{1, 2)"]  # is_complete is lexical: brackets
    code_page_something = "?Plot"
    code_generate_error = "1 +* 2"  # one output: the error, with the Syntax message
    code_execute_result = [{"code": "6*7", "result": "42"},
                           {"code": "Integrate[x^2, x]", "mime": "text/latex"}]
    code_display_data = [{"code": "%rkernel status", "mime": "text/html"}]
    code_clear_output = 'PrintTemporary["working"]'
    code_history_pattern = "6?7"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "Plot"


@pytest.mark.usefixtures("rk_local")
class TestLocal(WolframLanguageSamples):
    __test__ = True
    kernel_name = "rk-local"


@pytest.fixture(scope="session")  # set up before the class's kernel (unittest setUpClass)
def _ssh_kernelspec(sshbed: SSHBed, jupyter_env: str) -> None:
    kernelspec.install("conformance-ssh", "conformance over ssh", {
        "transport": "ssh", "host": sshbed.host, "port": sshbed.port, "user": sshbed.user,
        "identity_file": sshbed.key_file, "known_hosts": sshbed.known_hosts,
        "remote_python": sshbed.remote_python, "engine": "mathics"}, prefix=jupyter_env)


@pytest.mark.usefixtures("_ssh_kernelspec")
class TestOverSSH(WolframLanguageSamples):
    __test__ = True
    kernel_name = "rk-conformance-ssh"

"""Batch runs of notebooks on rk kernels, end to end on rk-local: papermill with parameters
(its command line, as a user runs it) and ``jupyter nbconvert --execute``; and the parameter
translator's Wolfram Language, value by value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from rk_jupyter.parameters import WolframTranslator

# Strings as character codes and Associations as keys and values: Mathics3's InputForm
# writes é as \[EAcute] and -> as a Unicode arrow.
RESULT = ("ToString[{n^2, ToCharacterCode[s], flag, xs, Keys[opts], Values[opts], nothing, r}, "
          "InputForm]")


def notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "rk-local", "language": "wolfram-language",
                                 "display_name": "rk-local"}
    nb.metadata["language_info"] = {"name": "wolfram-language"}
    parameters = nbformat.v4.new_code_cell('n = 1;\ns = "default";\nflag = False;\nxs = {};\n'
                                           'opts = <||>;\nnothing = 0;\nr = 0.5;')
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(RESULT)]
    nbformat.write(nb, path)
    return path


def result(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    outputs = nb.cells[-1].outputs
    assert [o.output_type for o in outputs] == ["execute_result"], outputs
    return outputs[0].data["text/plain"]


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())


def test_papermill_parameters_reach_the_engine(rk_local: str, tmp_path: Path) -> None:
    source = notebook(tmp_path / "in.ipynb")
    done = run("papermill", str(source), "out.ipynb", "-k", rk_local,
               "-p", "n", "10", "-p", "s", 'h\u00e9 "quoted" \\ back', "-p", "flag", "True",
               "-p", "r", "1e-7",
               "-y", json.dumps({"xs": [1, 2.5, "three"], "opts": {"a": 5, "b": [True]},
                                 "nothing": None}), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    injected = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[1]
    assert "injected-parameters" in injected.metadata["tags"]
    codes = ", ".join(str(ord(c)) for c in 'h\u00e9 "quoted" \\ back')
    assert result(tmp_path / "out.ipynb") == (
        f'{{100, {{{codes}}}, True, {{1, 2.5, "three"}}, {{"a", "b"}}, {{5, {{True}}}}, Null, '
        '1.*^-7}')


def test_a_parameter_name_that_is_no_symbol_is_refused_with_the_fix(rk_local: str,
                                                                    tmp_path: Path) -> None:
    source = notebook(tmp_path / "in.ipynb")
    done = run("papermill", str(source), "out.ipynb", "-k", rk_local, "-p", "n_max", "3",
               cwd=tmp_path)
    assert done.returncode != 0
    assert "'n_max' is not a Wolfram Language symbol" in done.stderr
    assert "'nMax'" in done.stderr


def test_nbconvert_executes_a_notebook(rk_local: str, tmp_path: Path) -> None:
    source = notebook(tmp_path / "in.ipynb")
    done = run("jupyter", "nbconvert", "--to", "notebook", "--execute", str(source),
               "--output", "out.ipynb", f"--ExecutePreprocessor.kernel_name={rk_local}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    codes = ", ".join(str(ord(c)) for c in "default")
    assert result(tmp_path / "out.ipynb") == f"{{1, {{{codes}}}, False, {{}}, {{}}, {{}}, 0, 0.5}}"


@pytest.mark.parametrize(("value", "text"), [
    (None, "Null"), (True, "True"), (False, "False"), (-3, "-3"), (2.5, "2.5"),
    (1e-07, "1.*^-7"), (1.5e300, "1.5*^300"), (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"), (float("nan"), "Indeterminate"),
    ('a"b\\c\nd', '"a\\"b\\\\c\\nd"'), ([1, [2]], "{1, {2}}"),
    ({"k": None}, '<|"k" -> Null|>'),
])
def test_values_in_wolfram_language(value: object, text: str) -> None:
    assert WolframTranslator.translate(value) == text


def test_the_injected_cell_and_the_parameters_cell_read_back() -> None:
    code = WolframTranslator.codify({"nMax": 3, "label": "x"})
    assert code == '(* Parameters *)\nnMax = 3;\nlabel = "x";\n'
    cell = nbformat.v4.new_code_cell("nMax = 3;  (* how many *)\nlabel = \"x\"")
    found = WolframTranslator.inspect(cell)
    assert [(p.name, p.default, p.help) for p in found] == [("nMax", "3", "how many"),
                                                          ("label", '"x"', "")]

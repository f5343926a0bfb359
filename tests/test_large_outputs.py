"""Large results and Print output are shown in a short form, their values kept (issue 15 item
4): through jupyter_client on rk-local, Mathics3 evaluating, as a notebook meets them.  How fast
``Range[200000]`` reaches the notebook is measured in ``benchmarks/bench_kernel.py``."""

from __future__ import annotations

import re

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter import kernelspec
from rk_jupyter.link.launcher import OUTPUT_LIMIT

from kernel_helpers import execute


@pytest.fixture(scope="module")
def kernel(rk_local: str):
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def shown(kc, code: str) -> tuple[str, int]:
    run = execute(kc, code, timeout=120)
    assert run.reply["status"] == "ok", run.reply
    [result] = run.results()
    return result["data"]["text/plain"], result["execution_count"]


def test_a_large_list_is_short_with_its_elided_count_and_out_keeps_it(kernel) -> None:
    text, line = shown(kernel, "Range[200000]")
    assert len(text.encode()) < 5000, "a short form, not 1.5 MB"
    body, hint = text.rsplit("\n", 1)
    assert body.startswith("{1, 2, 3, ") and body.endswith(", 199999, 200000}")
    [elided] = re.findall(r"<<(\d+)>>", body)
    kept = len(body.replace(f"<<{elided}>>, ", "").strip("{}").split(", "))
    assert int(elided) + kept == 200000, "the count says exactly what is not shown"
    assert f"{elided} elements left out" in hint and f"Out[{line}] holds all of it" in hint
    assert "output_limit" in hint
    assert shown(kernel, f"Length[Out[{line}]]")[0] == "200000"
    assert shown(kernel, f"Out[{line}][[123456]]")[0] == "123456"


def test_nested_and_atomic_giants_are_shortened_inside(kernel) -> None:
    text, _ = shown(kernel, "{Range[100000], x}")
    assert text.startswith("{{1, 2, ") and "}, x}" in text and re.search(r"<<\d+>>", text)
    text, _ = shown(kernel, 'StringRepeat["ab", 100000]')
    assert len(text) < 5000 and re.search(r"ab<<\d+>>ab|ba<<\d+>>ab|ab<<\d+>>ba", text)


def test_results_under_the_limit_are_whole(kernel) -> None:
    text, _ = shown(kernel, "Range[15000]")
    assert len(text) < OUTPUT_LIMIT and "<<" not in text and text.endswith("14999, 15000}")


def test_large_print_is_bounded(kernel) -> None:
    run = execute(kernel, "Print[Range[30000]]; 1", timeout=120)
    out = run.streams("stdout")
    assert len(out) < 5000 and "characters>>" in out and "shortened" in out
    assert out.startswith("{1, 2, 3") and "29999, 30000}" in out


def test_output_limit_in_the_kernelspec_shows_more(jupyter_env: str) -> None:
    kernelspec.install("biglimit", "Wolfram Language (big output)", {
        "transport": "local", "engine": "mathics", "output_limit": 2_000_000,
    }, prefix=jupyter_env)
    km, kc = start_new_kernel(kernel_name="rk-biglimit", startup_timeout=90)
    try:
        text, _ = shown(kc, "Range[30000]")
        assert "<<" not in text and len(text) > OUTPUT_LIMIT
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@pytest.mark.parametrize("code", ["Plot3D[Sin[x y], {x, 0, 3}, {y, 0, 3}]",
                                  "Graphics3D[{Red, Sphere[], Blue, Cuboid[{1, 1, 1}]}]"])
def test_graphics3d_comes_as_a_picture(kernel, code: str) -> None:
    """Issue 15 item 5: a static SVG of the default view and HTML that turns it (its script is
    in the bundle: nothing is fetched); the text stays -Graphics3D-."""
    run = execute(kernel, code, timeout=120)
    [result] = run.results()
    data = result["data"]
    assert data["text/plain"] == "-Graphics3D-"
    svg = data["image/svg+xml"]
    assert svg.startswith("<svg") and svg.count("<polygon") > 100
    html = data["text/html"]
    assert "<canvas" in html and "<script>" in html and svg in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

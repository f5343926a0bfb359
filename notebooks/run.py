"""Execute a notebook on an rk- kernel with nbclient and print every cell's outputs.

    python notebooks/run.py notebooks/quickstart.ipynb [--kernel rk-local] [--save OUT.ipynb]
"""

from __future__ import annotations

import argparse
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def show(output: dict) -> str:
    kind = output["output_type"]
    if kind == "stream":
        return f"[{output['name']}] {output['text'].rstrip()}"
    if kind == "error":
        return f"[error] {output['ename']}: {output['evalue']}"
    data = output.get("data", {})
    parts = [data.get("text/plain", "").rstrip()]
    for mime in ("text/latex", "image/svg+xml", "text/html", "image/png"):
        if mime in data:
            value = data[mime]
            parts.append(f"  + {mime} ({len(value)} chars)"
                         + (f": {value.strip()}" if mime == "text/latex" else ""))
    return "\n".join(p for p in parts if p)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebook")
    parser.add_argument("--kernel", default=None, help="kernelspec (default: the notebook's)")
    parser.add_argument("--save", help="write the executed notebook here")
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name", "rk-local")
    client = NotebookClient(nb, kernel_name=kernel, timeout=args.timeout)
    status = 0
    try:
        client.execute()
    except CellExecutionError as exc:
        print(f"cell failed: {exc}", file=sys.stderr)
        status = 1
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"In[{cell.get('execution_count')}]:= {cell.source}")
        for output in cell.outputs:
            print(show(output))
        print()
    if args.save:
        nbformat.write(nb, args.save)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Input[] and InputString[], which Mathics3 lacks, answered by the front end.

The worker sends an ``input`` event and waits for the agent's answer (``Worker.ask``), which the
agent gets from the Jupyter front end through ``EngineHost.read_input``.
"""

from __future__ import annotations

from typing import Any, Protocol


class Asker(Protocol):
    """The worker's side of asking: a line of text, or an expression read from one."""

    def ask(self, kind: str, prompt: Any) -> str: ...

    def read_expression(self, prompt: Any) -> Any: ...


def input_builtins(worker: Asker) -> list[Any]:
    """Input[] and InputString[], which Mathics3 10 lacks, answered by the front end."""
    from mathics.core.atoms import String
    from mathics.core.builtin import Builtin

    class Input(Builtin):
        """
        <dl>
          <dt>'Input'[]
          <dd>asks the front end for an expression, and evaluates it.
          <dt>'Input'[$prompt$]
          <dd>shows $prompt$ when asking.
        </dl>
        """

        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "read an expression from the front end and evaluate it"

        def eval(self, evaluation: Any) -> Any:
            "Input[]"
            return worker.read_expression(None)

        def eval_prompt(self, prompt: Any, evaluation: Any) -> Any:
            "Input[prompt_]"
            return worker.read_expression(prompt)

    class InputString(Builtin):
        """
        <dl>
          <dt>'InputString'[]
          <dd>asks the front end for a line of text, and returns it as a string.
          <dt>'InputString'[$prompt$]
          <dd>shows $prompt$ when asking.
        </dl>
        """

        context = "System`"
        messages: dict[str, str] = {}
        summary_text = "read a string from the front end"

        def eval(self, evaluation: Any) -> Any:
            "InputString[]"
            return String(worker.ask("InputStringPacket", None))

        def eval_prompt(self, prompt: Any, evaluation: Any) -> Any:
            "InputString[prompt_]"
            return String(worker.ask("InputStringPacket", prompt))

    return [Input(expression=False), InputString(expression=False)]

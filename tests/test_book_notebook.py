"""examples/debug_your_layers.ipynb runs from top to bottom and finds and fixes its bug."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "debug_your_layers.ipynb"


def test_debug_your_layers_notebook_runs_and_reaches_the_fix():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "first wrong layer: last_layer" in text
    assert "WRONG: batch-factor" in text
    assert "FixedSoftmaxWithLoss: all gradients right" in text

    def losses(label: str) -> tuple[float, float]:
        first, _, last = text.split(f"{label}: ")[1].split()[1:4]  # "loss 2.254 -> 1.019"
        return float(first), float(last)

    assert losses("correct")[1] < losses("correct")[0] - 0.5  # the symptom: correct learns,
    assert losses("buggy")[1] > losses("correct")[1] + 1  # the buggy one does not,
    assert losses("fixed") == losses("correct")  # and the fix gives exactly the correct run

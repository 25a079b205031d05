"""benchmarks/transfer_quality.py: its quick mode runs one regime end to end, offline.

One ``--quick`` run of the multi-label regime (the one with the parts reference and macro ROC
AUC) in a subprocess where every download fails, shared by the tests below: the probe, the
parts reference and ``fit()`` once, as a ``--fit-kwargs`` row (the recipe and the sweep train
as ``fit()`` does, and are left out to keep CI short). Then the table is rendered from
the JSON it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from offline import offline_env

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_quality.py"
ROWS = {"fit[head_only]", "probe", "parts"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("quality")
    output = work / "results.json"
    command = [
        sys.executable, os.fspath(BENCHMARK), "--quick", "--regime", "digits-multilabel",
        "--methods", "probe", "parts",
        "--label", "head_only", "--fit-kwargs", '{"epochs": 1, "learning_rate": 0.003}',
        "--output", os.fspath(output),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1200, check=False,
        env=offline_env(work / "keras_home", TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(output.read_text()), output


@pytest.mark.slow
def test_quick_run_scores_every_row_of_the_multi_label_regime(quick_run):
    _, results, _ = quick_run
    regime = results["regimes"]["digits-multilabel"]
    assert regime["metric"] == "macro ROC AUC"
    assert set(regime["methods"]) == ROWS
    for row in regime["methods"].values():
        assert 0.0 <= row["mean"] <= 1.0
        assert row["seconds"]["mean"] > 0.0


@pytest.mark.slow
def test_fit_kwargs_reach_fit_and_fit_records_its_decisions(quick_run):
    _, results, _ = quick_run
    (run,) = results["regimes"]["digits-multilabel"]["methods"]["fit[head_only]"]["runs"]
    decisions = {decision["name"]: decision for decision in run["decisions"]}
    assert decisions["head_learning_rate"]["value"] == 0.003


@pytest.mark.slow
def test_pretrains_in_plain_keras_and_learns_the_source_classes(quick_run):
    _, results, _ = quick_run
    # Two epochs on 300 digits from random weights beat chance (0.2) by far, in training and
    # in inference mode, which pretraining through the classifier's backbone never did.
    pretraining = results["pretraining"]["digits"]
    assert pretraining["train_accuracy"] > 0.4
    assert pretraining["held_out_accuracy"] > 0.4


@pytest.mark.slow
def test_table_renders_the_rows_from_the_json(quick_run):
    _, _, output = quick_run
    shown = subprocess.run(
        [sys.executable, os.fspath(BENCHMARK), "--table", os.fspath(output)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    header = shown.stdout.splitlines()[0]
    assert all(f" {row} " in header for row in ROWS), shown.stdout
    assert "| digits-multilabel | macro ROC AUC |" in shown.stdout

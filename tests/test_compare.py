"""``kinject compare``: the CI gate's pairing, statistics, verdicts and exit codes.

Run folders here are written in the grid's own on-disk format (``grid.json`` + ``cells/HASH/{cell,result}.json``)
with chosen per-question results, so each verdict is known in advance; the real grid run is compared in
``test_grid.py`` and a real damaged checkpoint in ``benchmarks/compare_gate.py``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner


def _write_run(folder, cells: dict[str, list[int]], ids: bool = True):
    """A finished run folder: one cell per (arm -> correctness list), experiment 'x', model 'm', task 't'."""
    grid = {"seed": 0, "cells": []}
    for i, (arm, correct) in enumerate(cells.items()):
        key = f"{i:016x}"
        grid["cells"].append({"experiment": "x", "model": "m", "arm": arm, "task": "t", "role": "main", "hash": key})
        cell = folder / "cells" / key
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"status": "done"}))
        per_question = {"doc_id": list(range(len(correct))), "correct": [float(c) for c in correct]}
        if ids:
            per_question["question_id"] = [f"q{j}" for j in range(len(correct))]
        (cell / "result.json").write_text(json.dumps({"acc": float(np.mean(correct)), "n": len(correct), "alias": "t",
                                                      "num_fewshot": 0, "per_question": per_question}))
    (folder / "grid.json").write_text(json.dumps(grid))
    return folder


def _correct(n_right: int, n: int = 100) -> list[int]:
    return [1] * n_right + [0] * (n - n_right)


def test_holm_matches_the_step_down_definition():
    from lm_eval_kinject.report.compare import holm

    # sorted p 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_real_drop_fails_the_gate_and_noise_does_not(tmp_path):
    from lm_eval_kinject.cli import main

    baseline = _write_run(tmp_path / "a", {"base": _correct(30), "ft-reg": _correct(60), "base+rag": _correct(80)})
    # ft-reg loses 20 questions it had right; base+rag swaps 2 right for 2 others (a tie moving); base identical
    swapped = _correct(80)
    swapped[0] = swapped[1] = 0
    swapped[98] = swapped[99] = 1
    new = _write_run(tmp_path / "b", {"base": _correct(30), "ft-reg": _correct(40), "base+rag": swapped})
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = CliRunner().invoke(main, ["compare", str(baseline), str(new), "--summary", str(summary),
                                       "--json", str(tmp_path / "cmp.json")])
    assert result.exit_code == 1, result.output
    assert ("**1 cell(s) dropped significantly** (Holm-corrected p < 0.05 over the 1 cell(s) that could reach it; "
            "2 with too few questions changed to be testable)") in result.output
    data = json.loads((tmp_path / "cmp.json").read_text())
    verdicts = {c["key"].split(" · ")[2]: c for c in data["cells"]}
    assert verdicts["ft-reg"]["verdict"] == "drop" and verdicts["ft-reg"]["only_baseline"] == 20
    assert verdicts["ft-reg"]["diff"] == pytest.approx(-0.2) and verdicts["ft-reg"]["diff_ci"][1] < 0
    assert verdicts["ft-reg"]["p_holm"] >= verdicts["ft-reg"]["p_value"]
    assert verdicts["base+rag"]["verdict"] == "same" and (verdicts["base+rag"]["only_baseline"],
                                                          verdicts["base+rag"]["only_new"]) == (2, 2)
    assert verdicts["base"]["verdict"] == "same" and verdicts["base"]["p_value"] == 1.0
    assert summary.read_text().startswith("earlier step\n## kinject compare")  # appended, as GitHub's summary wants


def test_a_drop_significant_alone_is_not_after_holm(tmp_path):
    from lm_eval_kinject.report.compare import compare_runs

    # 7 lost, 0 won: exact McNemar p = 0.0156 alone; Holm across 4 cells multiplies the smallest by 4 -> 0.0625.
    # The other three cells each swap 3 right answers for 3 others: 6 changed questions, testable (their best
    # possible p, 6 to 0, is 0.031), so they count in the correction
    arms = {"base": _correct(50), "ft-reg": _correct(50), "ft-par": _correct(50), "ft-raft": _correct(50)}
    baseline = _write_run(tmp_path / "a", arms)
    swapped = [1] * 47 + [0] * 3 + [1] * 3 + [0] * 47
    new = _write_run(tmp_path / "b", {"base": swapped, "ft-reg": _correct(43), "ft-par": swapped, "ft-raft": swapped})
    result = compare_runs(baseline, new)
    cell = next(c for c in result.cells if " ft-reg " in f" {c.key} ")
    assert cell.p_value == pytest.approx(2 * 0.5 ** 7) and cell.p_holm == pytest.approx(4 * 2 * 0.5 ** 7)
    assert not result.drops
    assert compare_runs(baseline, new, alpha=0.1).drops  # at alpha 0.1 it is flagged


def test_unchanged_cells_do_not_weaken_the_gate(tmp_path):
    """Tarone: a cell that cannot reach p < alpha (identical in both runs, or only 5 questions changed) is left out of
    the Holm correction, so a grid of many unchanged cells still catches the one that dropped."""
    from lm_eval_kinject.report.compare import compare_runs, comparison_markdown

    arms = {f"ft-par{i}": _correct(50) for i in range(1, 11)}
    baseline = _write_run(tmp_path / "a", arms)
    five = _correct(45)  # 5 questions lost, none won: p = 0.0625, the best 5 changed questions can give
    new = _write_run(tmp_path / "b", {**arms, "ft-par1": _correct(43), "ft-par2": five})
    result = compare_runs(baseline, new)
    cells = {c.key.split(" · ")[2]: c for c in result.cells}
    assert [c.key.split(" · ")[2] for c in result.tested] == ["ft-par1"] and not cells["ft-par2"].testable
    assert cells["ft-par1"].p_holm == cells["ft-par1"].p_value == pytest.approx(2 * 0.5 ** 7)
    assert [c.key.split(" · ")[2] for c in result.drops] == ["ft-par1"]
    summary = comparison_markdown(result)
    assert "| n/a |" in summary and "9 with too few questions changed" in summary


def test_cells_pair_by_question_id_not_by_position(tmp_path):
    from lm_eval_kinject.report.compare import compare_runs

    baseline = _write_run(tmp_path / "a", {"base": _correct(50)})
    new = _write_run(tmp_path / "b", {"base": _correct(50)})
    result_file = new / "cells" / f"{0:016x}" / "result.json"
    result = json.loads(result_file.read_text())
    per_question = result["per_question"]
    for key in per_question:  # the same answers, listed in the opposite order
        per_question[key] = per_question[key][::-1]
    result_file.write_text(json.dumps(result))
    cell = compare_runs(baseline, new).cells[0]
    assert (cell.only_baseline, cell.only_new) == (0, 0)


def test_unusable_input_exits_2_with_one_line(tmp_path):
    from lm_eval_kinject.cli import main

    good = _write_run(tmp_path / "a", {"base": _correct(50)})
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.json").write_text('{"cells": [')  # truncated
    cases = {
        str(tmp_path / "nowhere"): "neither a grid run folder (grid.json) nor a report.json",
        str(other): "report.json: unreadable report",
    }
    for path, expected in cases.items():
        result = CliRunner().invoke(main, ["compare", str(good), path])
        assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output, result.output
    elsewhere = _write_run(tmp_path / "c", {"ft-reg": _correct(50)})
    result = CliRunner().invoke(main, ["compare", str(good), str(elsewhere)])
    assert result.exit_code == 2 and "no finished cell in common" in result.output
    result = CliRunner().invoke(main, ["compare", str(good), str(good), "--alpha", "1.5"])
    assert result.exit_code == 2 and "--alpha 1.5: expected a number between 0 and 1" in result.output


def test_a_cell_missing_from_the_new_run_is_listed(tmp_path):
    from lm_eval_kinject.report.compare import compare_runs, comparison_markdown

    baseline = _write_run(tmp_path / "a", {"base": _correct(50), "base+rag": _correct(80)})
    new = _write_run(tmp_path / "b", {"base": _correct(50)})
    result = compare_runs(baseline, new)
    assert result.only_baseline == ["x · m · base+rag · t"] and len(result.cells) == 1
    summary = comparison_markdown(result)
    assert "Finished in the baseline only (failed, pending or missing in the new run): 1 cell(s)" in summary
    assert "\n- x · m · base+rag · t\n" in summary


def test_the_example_workflow_steps_gate_as_documented(tmp_path):
    """examples/ci/kinject-benchmark.sh, the shell steps of the example GitHub Actions workflow, run as Actions runs
    them: the summary lands in $GITHUB_STEP_SUMMARY and the exit code is the gate."""
    import os
    import subprocess

    import yaml
    from kinject_testing import BIN, REPO

    script = REPO / "examples" / "ci" / "kinject-benchmark.sh"
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "KINJECT": str(BIN / "kinject")}
    env.pop("GITHUB_REPOSITORY", None)

    def step(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=300)

    good = _write_run(tmp_path / "good", {"base": _correct(30), "ft-reg": _correct(60)})
    same = _write_run(tmp_path / "same", {"base": _correct(30), "ft-reg": _correct(60)})
    worse = _write_run(tmp_path / "worse", {"base": _correct(30), "ft-reg": _correct(35)})
    fetched = step("fetch-baseline", str(tmp_path / "baseline"))
    assert fetched.returncode == 0 and "no baseline fetched" in fetched.stdout  # outside Actions: nothing to fetch
    first = step("compare", str(tmp_path / "baseline"), str(good))
    assert first.returncode == 0 and "No baseline yet" in summary.read_text()
    assert step("compare", str(good), str(same)).returncode == 0
    assert "**No significant change** in 2 cells" in summary.read_text()
    dropped = step("compare", str(good), str(worse))
    assert dropped.returncode == 1 and "a significant drop" in dropped.stderr
    assert "**1 cell(s) dropped significantly**" in summary.read_text()
    assert json.loads((worse / "compare.json").read_text())["drops"] == 1
    assert step("compare", str(good), str(tmp_path / "nowhere")).returncode == 2
    assert step("nonsense").returncode == 2
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "kinject-benchmark.yml").read_text())
    runs = [s.get("run", "") for s in workflow["jobs"]["benchmark"]["steps"]]
    for name in ("setup", "grid", "fetch-baseline", "compare"):
        assert any(f"examples/ci/kinject-benchmark.sh {name}" in r for r in runs), name

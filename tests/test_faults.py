"""The faults a CI job meets, reproduced for real on ``kinject grid``: a second process on one run folder, SIGTERM
mid-run, a disk that fills while a checkpoint is written (a small tmpfs in a user namespace). Each ends in one line
and a run folder the same command resumes from. (A served model going away: ``test_backends.py``.)"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest
from kinject_testing import BIN, SHARED_DATA, run_cli

CONFIG = textwrap.dedent(f"""\
    seed: 0
    vars: {{data: "{SHARED_DATA}"}}
    models:
      smollm2-135m: {{pretrained: smollm2-135m}}
    task_metadata: {{current_events_dir: "${{data}}/current_events_sample", mmlu_dir: "${{data}}/mmlu"}}
    knowledge_bases:
      current_events: {{sources: ["${{data}}/current_events_sample/chunks.jsonl"]}}
    retrieval: {{retriever: bm25, k: 1}}
    finetune: {{max_steps: 1, block_size: 64, batch_size: 2}}
    lm_eval: {{batch_size: 8, limit: 3}}
    experiments:
      ce:
        tasks: [current_events_cloze, kinject_mmlu_cloze_anatomy_0shot]
        kb: current_events
        arms: ARMS
    """)


def _config(tmp_path, arms: str = "[base, base+rag]"):
    path = tmp_path / "grid.yaml"
    path.write_text(CONFIG.replace("ARMS", arms))
    return path


def _staging(run):
    return [p for p in run.rglob("*") if ".tmp" in p.name]


def _finished(run) -> set[str]:
    return {p.parent.name for p in run.glob("cells/*/cell.json") if not p.parent.name.startswith(".")}


def test_a_second_grid_on_one_run_folder_refuses_in_one_line_or_waits(tmp_path):
    from lm_eval_kinject.faults import folder_lock

    config, run = _config(tmp_path), tmp_path / "run"
    with folder_lock(run, "kinject grid"):  # another kinject grid holds the folder
        refused = run_cli(["kinject", "grid", str(config), "--out", str(run)])
        assert refused.returncode == 1
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"Error: {run}: in use by kinject grid (pid {os.getpid()} on ") and "--wait" in line
        assert not (run / "cells").exists()  # it wrote nothing
        waiting = subprocess.Popen([str(BIN / "kinject"), "grid", str(config), "--out", str(run), "--wait"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        time.sleep(5)
        assert waiting.poll() is None and not (run / "cells").exists()  # still waiting, nothing written
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0 and "4 cells evaluated" in out, err[-2000:]
    # a grid split by --models (one process per GPU) takes its own share's lock, beside a whole-folder run
    with folder_lock(run, "kinject grid"):
        shared = run_cli(["kinject", "grid", str(config), "--out", str(run), "--models", "smollm2-135m"])
    assert shared.returncode == 0 and "4 already finished" in shared.stdout, shared.stderr[-2000:]


def test_sigterm_mid_grid_ends_in_one_line_and_the_run_resumes(tmp_path):
    config, run = _config(tmp_path), tmp_path / "run"
    process = subprocess.Popen([str(BIN / "kinject"), "grid", str(config), "--out", str(run)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 600
    while not _finished(run) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # as a cancelled CI job is stopped
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"Interrupted by SIGTERM. Finished cells are kept in {run}/cells; run the "
                                            "same command to continue.")
    finished = _finished(run)
    assert 1 <= len(finished) < 4 and not _staging(run)
    again = run_cli(["kinject", "grid", str(config), "--out", str(run)])
    assert again.returncode == 0 and f"{len(finished)} already finished" in again.stdout, again.stderr[-2000:]
    assert len(list(run.glob("cells/*/result.json"))) == 4


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || "
                           "mount -t tmpfs -o size=1m tmpfs \"$(mktemp -d)\""], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` and tmpfs in a user namespace (Linux)")
def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_and_resumable(tmp_path):
    """The run folder on a 200 MB tmpfs: the KB and the base cells fit, FT-reg's 538 MB checkpoint does not. After
    the disk is grown (as if space were freed), the same command finishes, reusing what was done."""
    config = _config(tmp_path, "[base, ft-reg]")
    disk = tmp_path / "disk"
    disk.mkdir()
    kinject = BIN / "kinject"
    script = textwrap.dedent(f"""\
        set -u
        mount -t tmpfs -o size=200m tmpfs {disk}
        {kinject} grid {config} --out {disk}/run > {tmp_path}/first.out 2> {tmp_path}/first.err
        echo $? > {tmp_path}/first.rc
        find {disk}/run -name '*tmp*' > {tmp_path}/staging.txt
        ls {disk}/run/cells > {tmp_path}/cells.txt
        mount -o remount,size=1500m {disk}
        {kinject} grid {config} --out {disk}/run > {tmp_path}/second.out 2> {tmp_path}/second.err
        echo $? > {tmp_path}/second.rc
        """)
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    first_err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first_err[-3000:]
    last = first_err.strip().splitlines()[-1]
    assert last.startswith(f"Error: no space left on the device of {disk}/run/checkpoints/"), first_err[-3000:]
    assert " while writing a checkpoint (" in last and " free; it needs about 1.5 GB)" in last
    assert "free space and run the same command again" in last and "Traceback" not in first_err
    assert (tmp_path / "staging.txt").read_text().strip() == ""  # nothing half-written left behind
    finished_before = len((tmp_path / "cells.txt").read_text().split())
    assert finished_before >= 2  # the base cells were written before the checkpoint
    second = (tmp_path / "second.out").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()[-3000:]
    assert f"{finished_before} already finished" in second and "0 failed" in second

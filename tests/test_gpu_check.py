"""bench/gpu_check.sh, the one GPU check of the training path, runs end to end in its CPU smoke mode
(`--device cpu --smoke`): every check runs, the CUDA tests are skipped, and the report is a markdown
table with one row per check. The real run needs a GPU (see the script's header)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_smoke_mode_runs_every_check_on_the_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert done.returncode == 0, (done.stdout[-3000:], logs)
    report = (tmp_path / "gpu_check.md").read_text()
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    checks = {r[0].lstrip("| "): r[1] for r in rows if r[0] not in ("| check", "| T")}
    names = ("env", "bench", "world", "pipeline")
    assert {k: checks.get(k) for k in names} == dict.fromkeys(names, "ok"), report
    assert checks["cuda"] == "skipped (no CUDA GPU)", report  # skipped here, never "failed"
    assert "skipped" in logs["cuda.log"]
    assert "| 64 | train(), accumulation 2 |" in report  # the bench table made it into the report
    assert "pretrain" in logs["pipeline.log"]  # the seed plan was printed (--dry-run)


def test_gpu_check_rejects_an_unknown_option(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "gpu_check.sh: unknown option --fast (see --help)"
    ]

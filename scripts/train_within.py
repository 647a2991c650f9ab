"""Train several recipes side by side on one GPU so that all of them end by a deadline.

    python scripts/train_within.py --minutes 23 --data DATA --out OUT --workdir RUNS \\
        --job "recipes/denoise_acla_deep.json --continue napari_attnrestore/weights/denoise-acla-deep.safetensors" \\
        --job recipes/demosaic_grl_deep.json

A lent GPU machine comes for a fixed time, and a cosine schedule needs its step count up
front.  So every job first runs (``--probe`` seconds) under a long schedule, all jobs
together, as they will share the GPU afterwards.  Each job's step rate is read from its
``loss.tsv``; the jobs are stopped (SIGTERM: the recipe runner saves its state) and resumed
with ``--steps`` set so that each schedule ends by the deadline, less the time a restart
took and ``--margin`` seconds for scoring and saving.  Each model card lists both segments.

Every job runs under the recipe's ``train_gpu`` settings where CUDA is available and
without them elsewhere (the driver passes ``--gpu-settings`` or ``--no-gpu-settings``).
Writes ``<workdir>/train_within.log`` and, when every job has ended, ``<workdir>/DONE``
(each job's exit code).  Jobs' output goes to ``<workdir>/<recipe stem>.log``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from napari_attnrestore.training.recipe import run_folder


def curve(path: Path) -> list[tuple[int, float]]:
    """``(step, elapsed seconds)`` rows of a run's ``loss.tsv``."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append((int(parts[0]), float(parts[2])))
    return rows


def step_rate(rows: list[tuple[int, float]], since_step: int, window: float) -> float | None:
    """Steps per second over the last ``window`` seconds of the rows after ``since_step``."""
    rows = [r for r in rows if r[0] > since_step]
    if len(rows) < 2:
        return None
    last = rows[-1]
    first = next(r for r in rows if r[1] >= last[1] - window)
    if first is last:
        first = rows[0]
    return (last[0] - first[0]) / (last[1] - first[1]) if last[1] > first[1] else None


class Job:
    """One recipe run (a subprocess of the recipe runner) and its log."""

    def __init__(self, spec: str, args: argparse.Namespace) -> None:
        words = shlex.split(spec)
        self.recipe, self.extra = Path(words[0]), words[1:]
        self.args = args
        self.log = args.workdir / f"{self.recipe.stem}.log"
        # the run's settings (and so its folder) are the driver's: a recipe's train_gpu block on a GPU
        self.gpu = torch.cuda.is_available()
        self.run_dir = run_folder(json.loads(self.recipe.read_text()), args.workdir, self.gpu)
        self.proc: subprocess.Popen | None = None
        self.launched = 0.0

    def start(self, steps: int) -> None:
        cmd = [sys.executable, "-m", "napari_attnrestore.training.recipe", str(self.recipe), "--data", str(self.args.data),
               "--out", str(self.args.out), "--workdir", str(self.args.workdir), "--steps", str(steps), *self.extra,
               "--gpu-settings" if self.gpu else "--no-gpu-settings"]
        if self.args.threads:
            cmd += ["--threads", str(self.args.threads)]
        with open(self.log, "a") as out:
            out.write(f"$ {shlex.join(cmd)}\n")
            out.flush()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.launched = time.time()

    def rows(self) -> list[tuple[int, float]]:
        return curve(self.run_dir / "loss.tsv")


def note(workdir: Path, text: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {text}"
    print(line, flush=True)
    with open(workdir / "train_within.log", "a") as f:
        f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", action="append", required=True, help="a recipe path, then recipe-runner options")
    p.add_argument("--minutes", type=float, required=True, help="every job ends within this time (scoring included)")
    p.add_argument("--probe", type=float, default=180.0, help="seconds of the first, measuring run")
    p.add_argument("--margin", type=float, default=60.0, help="seconds kept for scoring and saving at the end")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + a.minutes * 60 - a.margin
    jobs = [Job(spec, a) for spec in a.job]
    start_steps = {}
    for job in jobs:
        rows = job.rows()
        start_steps[job.recipe] = rows[-1][0] if rows else 0
        job.start(10**6)
    # how long a launch takes to its first step (loading data, compiling): a restart costs about as much
    lead: dict[Path, float] = {}
    probe_end = time.time() + a.probe
    while time.time() < probe_end:
        time.sleep(5)
        for job in jobs:
            if job.recipe not in lead and any(r[0] > start_steps[job.recipe] for r in job.rows()):
                lead[job.recipe] = time.time() - job.launched
    rates = {job.recipe: step_rate(job.rows(), start_steps[job.recipe], window=a.probe / 3) for job in jobs}
    for job in jobs:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
    for job in jobs:
        job.proc.wait()
    codes: dict[str, int] = {}
    for job in jobs:
        rate, code = rates[job.recipe], job.proc.returncode
        if rate is None or code not in (0, 130):
            note(a.workdir, f"{job.recipe}: no step rate (exit {code}); see {job.log}")
            codes[str(job.recipe)] = code if code else 1
            job.proc = None
            continue
        done, restart = job.rows()[-1][0], lead.get(job.recipe, a.probe)
        steps = done + int(rate * max(deadline - time.time() - restart, 0))
        note(a.workdir, f"{job.recipe}: {rate:.2f} steps/s in the probe, at step {done}, "
                        f"{restart:.0f} s to the first step; resuming with --steps {steps}")
        job.start(steps)
    for job in jobs:
        if job.proc is not None:
            job.proc.wait()
            codes[str(job.recipe)] = job.proc.returncode
            note(a.workdir, f"{job.recipe}: exit {job.proc.returncode}")
    (a.workdir / "DONE").write_text(json.dumps(codes, indent=1) + "\n")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

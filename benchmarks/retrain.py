"""How close a retrain comes to the shipped models: train again from the configs, compare.

    python benchmarks/retrain.py --only fmnist-encoder,fmnist-classifier
    python benchmarks/retrain.py --only sr                 # one restorer (about an hour on CPU)
    python benchmarks/retrain.py --only sr --seed 1        # seed-to-seed variation instead

For each chosen model of ``build_zoo.SHIPPED``: run the spec's ``train`` commands (the ones
``make models`` and the registry's ``reproduce`` list give) as subprocesses of this checkout's
``enfold``, each in ``--root`` (default runs/retrain) as its working directory, so every run lands
at the same relative path under ``--root`` as the shipped one does in the repository and a
fine-tune records the same ``--pretrained`` path. A run under ``--root`` that already reached its
``train.max_steps`` with the same resolved config is read back, not retrained; an unfinished one
is resumed by the same command; one of another config (another seed) is an error, never
overwritten. ``--seed N`` adds ``--set train.seed=N`` to every command and puts its runs and
scratch zoo in ``--root``/seed<N> instead, so the same-seed and other-seed retrains sit side by
side in one root.

Then ``build_zoo.build`` exports, validates and measures the retrained runs into a scratch zoo
(``--root``/zoo; the package's zoo and the README are not touched) exactly as the shipped zoo was
built, and the shipped artifacts are measured again in this run on the same held-out data. One
row per model: the shipped and the retrained held-out number at the shipped precision, their
difference against the zoo's own tolerance (``enfold.zoo.checks.TOLERANCE``: 0.05 dB of PSNR,
0.2 points of top-1), the wall minutes of training, the seed, and whether the retrained
checkpoint is bit-identical to the shipped one (its sha256 against the registry's; when the
shipped run is on this machine, also whether the weights alone are identical). The table goes to
the ``retrain`` section of docs/RESULTS.md (rows accumulate per model and seed in
``--root``/retrain.json, so the cheap models and a restorer can be run apart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # before torch loads: one thread unless told (the subprocesses too)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_zoo  # noqa: E402
from build_zoo import ModelSpec  # noqa: E402
from common import ROOT, machine  # noqa: E402
from results_doc import write_section  # noqa: E402

from enfold.errors import EnfoldError  # noqa: E402

DEFAULT_ROOT = ROOT / "runs" / "retrain"
RESULTS = ROOT / "docs" / "RESULTS.md"
SECTION = "retrain"
TIMES = "retrain-times.json"  # under --root: wall seconds of each run this script trained
REPORT = "retrain.json"  # under --root: every row measured so far, by model and seed
ZOO = "zoo"  # under --root: the scratch zoo of the retrained models


@dataclass(frozen=True)
class Command:
    """One ``enfold`` training command of a spec, as this script runs it."""

    text: str  # as the spec writes it
    argv: list[str]  # the arguments after ``enfold``, --config absolute, --seed applied
    out: str  # its --out (relative to --root)

    def option(self, name: str) -> str | None:
        """The value after ``name`` (its last occurrence), or None."""
        hits = [i for i, a in enumerate(self.argv[:-1]) if a == name]
        return self.argv[hits[-1] + 1] if hits else None

    def options(self, name: str) -> list[str]:
        """Every value given after ``name``."""
        return [self.argv[i + 1] for i, a in enumerate(self.argv[:-1]) if a == name]


def parse_command(text: str, seed: int | None) -> Command:
    """A spec's training command: ``enfold pretrain|finetune ... --out RUN``, with a relative
    --config made absolute (it names a file of the repository) and ``--seed`` as
    ``--set train.seed=N``."""
    parts = shlex.split(text)
    if len(parts) < 2 or parts[0] != "enfold" or parts[1] not in ("pretrain", "finetune"):
        raise EnfoldError(f"cannot retrain by {text!r}: a training command is "
                          "`enfold pretrain|finetune ... --out RUN`")
    argv = parts[1:]
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--config", "-c") and not Path(argv[i + 1]).is_absolute():
            argv[i + 1] = str(ROOT / argv[i + 1])
    if seed is not None:
        argv += ["--set", f"train.seed={seed}"]
    command = Command(text, argv, "")
    out = command.option("--out") or command.option("-o")
    if out is None or Path(out).is_absolute():
        raise EnfoldError(f"cannot retrain by {text!r}: its --out must be a path relative to the "
                          "repository, so the run can land at the same place under --root")
    return Command(text, argv, out)


def resolved_config(command: Command) -> dict[str, Any]:
    """The config ``command`` trains with, as plain containers (what its checkpoint records)."""
    from enfold.config import load_config, to_dict

    extra = list(command.options("--set"))
    if command.option("--max-steps") is not None:
        extra.append(f"train.max_steps={command.option('--max-steps')}")
    if "--no-compile" in command.argv:
        extra.append("train.compile=false")
    config = command.option("--config") or command.option("-c")
    return to_dict(load_config(config, extra))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, sub in d.items()
            for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def finished(run: Path, command: Command) -> bool:
    """Whether ``run`` holds a finished run of exactly ``command``'s config (read back); False
    when it holds none or an unfinished one (the command resumes it). A run of another config
    is an error: retraining over it would mix two experiments."""
    from enfold.checkpoint.store import LAST, load_checkpoint
    from enfold.config import config_from_checkpoint, to_dict

    last = run / LAST
    if not last.is_file():
        return False
    state = load_checkpoint(last)
    saved = _flat(to_dict(config_from_checkpoint(state["config"])))
    want = _flat(resolved_config(command))
    changed = sorted(k for k in saved.keys() | want.keys() if saved.get(k) != want.get(k))
    if changed:
        raise EnfoldError(f"{run} holds a run of another config ({', '.join(changed)} differ) "
                          "than `" + command.text + "` with this --seed: use another --root, "
                          "or remove that run to train it again")
    return int(state["step"]) >= int(want["train.max_steps"])


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_command(command: Command, root: Path) -> None:
    """``enfold ARGV`` of this checkout in a subprocess, in ``root``; a failure is an error."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "enfold.cli.app", *command.argv]
    print(f"$ (cd {root}) enfold {shlex.join(command.argv)}", flush=True)
    done = subprocess.run(argv, cwd=root, env=env, check=False)
    if done.returncode != 0:
        raise EnfoldError(f"`{command.text}` failed with exit code {done.returncode} (its "
                          f"output is above); the run in {root / command.out} is kept and is "
                          "resumed by running this benchmark again")


def train_runs(specs: list[ModelSpec], root: Path, seed: int | None,
               runner=run_command) -> dict[str, dict[str, Any]]:
    """Train every run ``specs`` need under ``root`` (each once, finished ones read back):
    ``{out: {"seconds": wall seconds or None, "read_back": bool}}``. The seconds of a run
    trained by an earlier call stay in ``root``/retrain-times.json."""
    root.mkdir(parents=True, exist_ok=True)
    times_path = root / TIMES
    runs: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for text in spec.train:
            command = parse_command(text, seed)
            if command.out in runs:
                continue
            if finished(root / command.out, command):
                recorded = _read_json(times_path).get(command.out, {})
                print(f"{command.out}: finished, read back", flush=True)
                runs[command.out] = {"seconds": recorded.get("seconds"), "read_back": True}
                continue
            resumed = (root / command.out / "checkpoint-last.pt").is_file()
            t0 = time.time()
            runner(command, root)
            seconds = time.time() - t0
            times = _read_json(times_path)
            if resumed:  # an interrupted run: its earlier part counts too, when it was timed
                earlier = times.get(command.out, {}).get("seconds")
                seconds = None if earlier is None else earlier + seconds
            times[command.out] = {"seconds": seconds, "argv": command.argv}
            times_path.write_text(json.dumps(times, indent=2) + "\n")
            runs[command.out] = {"seconds": seconds, "read_back": False}
    return runs


def weights_sha256(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's weights alone (names, dtypes, shapes, bytes), blind to what
    else the file records (versions, the --pretrained path)."""
    import torch

    from enfold.checkpoint.store import load_checkpoint

    digest = hashlib.sha256()
    for name, tensor in sorted(load_checkpoint(checkpoint)["model"].items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_match(spec: ModelSpec, root: Path, shipped_sha: str,
                     shipped_runs: Path | None) -> dict[str, Any]:
    """Whether the retrained checkpoint is the shipped one: file sha256 against the registry's;
    weights alone when the shipped run is on this machine (its file sha256 the registry's)."""
    from enfold.digest import file_sha256

    ours = root / spec.run / "checkpoint-last.pt"
    sha = file_sha256(ours)
    found = {"sha256": sha, "shipped_sha256": shipped_sha, "identical": sha == shipped_sha,
             "weights_identical": None}
    theirs = shipped_runs / spec.run / "checkpoint-last.pt" if shipped_runs else None
    if found["identical"]:
        found["weights_identical"] = True
    elif theirs is not None and theirs.is_file() and file_sha256(theirs) == shipped_sha:
        found["weights_identical"] = weights_sha256(ours) == weights_sha256(theirs)
    return found


def shipped_models(specs: list[ModelSpec], zoo: Path) -> dict[str, Any]:
    """The registry entry of every spec in ``zoo``; a missing one is an error before any
    training (there is nothing to compare a retrain with)."""
    from enfold.zoo.registry import list_models

    models = {m.name: m for m in list_models(zoo)}
    missing = [s.name for s in specs if s.name not in models]
    if missing:
        raise EnfoldError(f"{zoo} ships no {', '.join(missing)} to compare a retrain with "
                          f"(it ships: {', '.join(models) or 'nothing'}); build it first with "
                          "python benchmarks/build_zoo.py, or pass --zoo")
    return models


def measure_shipped(model) -> dict[str, Any]:
    """The shipped artifact's held-out number, measured again now on its registry's data."""
    from enfold.zoo.checks import model_config
    from enfold.zoo.heldout import measure

    m = model.metric
    return measure(model.artifact, model_config(model), count=m["count"], seed=m["seed"],
                   bank_per_class=m.get("bank_per_class"))


def compare(spec: ModelSpec, model, entry: dict[str, Any] | None, skipped: str | None,
            checkpoint: dict[str, Any], minutes: float | None, read_back: bool,
            seed: dict[str, Any]) -> dict[str, Any]:
    """One row: the shipped and retrained held-out numbers at the shipped precision."""
    from enfold.zoo.checks import TOLERANCE

    shipped = measure_shipped(model)
    row = {"model": spec.name, "metric": shipped["name"], "label": shipped["label"],
           "unit": shipped["unit"], "dataset": shipped["dataset"], "precision": model.precision,
           "shipped": shipped["value"], "shipped_registry": model.metric["value"],
           "retrain": None, "difference": None, "tolerance": TOLERANCE[shipped["unit"]],
           "within": None, "minutes": minutes, "read_back": read_back, **seed,
           "checkpoint": checkpoint, "skipped": skipped}
    if entry is None:
        return row
    got = entry["metric"]
    if got["name"] != shipped["name"] or got["dataset"] != shipped["dataset"]:
        raise EnfoldError(f"{spec.name}: the retrain was measured on {got['dataset']} "
                          f"({got['name']}), the shipped model on {shipped['dataset']} "
                          f"({shipped['name']}): the two cannot be compared")
    value = got.get(f"{model.precision}_value")
    if value is None:  # the retrain has no export at the shipped precision: its kept one
        value, row["precision"] = got["value"], f"{model.precision} shipped, {entry['precision']}"
    shipped_fp32 = model.metric.get("fp32_value")  # as the registry recorded it
    row.update(retrain=value, difference=value - shipped["value"],
               fp32_difference=None if shipped_fp32 is None else got["fp32_value"] - shipped_fp32)
    row["within"] = abs(row["difference"]) <= row["tolerance"]
    return row


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} dB" if unit == "dB" else f"{value:.2f} %"


def _signed(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f} dB" if unit == "dB" else f"{value:+.2f} points"


def _checkpoint_cell(c: dict[str, Any]) -> str:
    if c["identical"]:
        return f"bit-identical (`{c['sha256'][:12]}`)"
    weights = {True: "weights identical", False: "weights differ",
               None: "shipped checkpoint not on this machine"}[c["weights_identical"]]
    return f"differs (`{c['sha256'][:12]}` vs `{c['shipped_sha256'][:12]}`; {weights})"


def _minutes_cell(row: dict[str, Any]) -> str:
    if row["minutes"] is None:
        return "not timed (read back)"
    digits = 1 if row["minutes"] >= 1 else 2
    return f"{row['minutes']:.{digits}f}" + (" (read back)" if row["read_back"] else "")


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``rows``."""
    lines = ["| model | metric (held-out data) | shipped | retrain | difference | within "
             "tolerance | training min | seed | checkpoint |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        metric = f"{r['label']} ({r['unit']}, {r['precision']}) on {r['dataset']}"
        if r["skipped"]:
            within = f"not built: {r['skipped']}"
        else:
            unit = "dB" if r["unit"] == "dB" else "points"
            within = ("yes" if r["within"] else "no") + f" (±{r['tolerance']:g} {unit})"
        lines.append(
            f"| `{r['model']}` | {metric} | {_number(r['shipped'], r['unit'])} | "
            f"{_number(r['retrain'], r['unit'])} | {_signed(r['difference'], r['unit'])} | "
            f"{within} | {_minutes_cell(r)} | {r['seed']} ({r['seed_from']}) | "
            f"{_checkpoint_cell(r['checkpoint'])} |")
    return "\n".join(lines)


def seed_of(spec: ModelSpec, seed: int | None) -> dict[str, Any]:
    """The training seed of ``spec``'s run and where it came from: ``--seed`` (seed-to-seed
    variation) or its config (same-seed reproducibility)."""
    if seed is not None:
        return {"seed": seed, "seed_from": "--seed: seed-to-seed"}
    own = resolved_config(parse_command(spec.train[-1], None))["train"]["seed"]
    return {"seed": own, "seed_from": "the config's: same seed"}


def seed_root(root: Path, seed: int | None) -> Path:
    """Where the runs of ``seed`` go: ``root`` itself for the configs' own seeds (the
    repository's layout), ``root``/seed<N> for ``--seed N``, so one root holds both."""
    return root if seed is None else root / f"seed{seed}"


def retrain(specs: list[ModelSpec], root: Path, seed: int | None = None,
            zoo: Path | None = None, shipped_runs: Path | None = ROOT, log=print,
            runner=run_command) -> list[dict[str, Any]]:
    """Retrain ``specs`` under ``root`` (``root``/seed<N> with a ``seed``), build them into
    a scratch zoo there and compare each with the model of that name in ``zoo`` (default: the
    package's): one row per model."""
    from enfold.zoo.registry import SHIPPED_ZOO

    models = shipped_models(specs, zoo or SHIPPED_ZOO)
    for spec in specs:  # every command parses before any training starts
        if Path(spec.run).is_absolute():
            raise EnfoldError(f"{spec.name}: its run {spec.run} is absolute; a retrain needs a "
                              "run path relative to the repository")
        for text in spec.train:
            parse_command(text, seed)
    work = seed_root(root, seed)
    runs = train_runs(specs, work, seed, runner)
    doc, skipped = build_zoo.build(specs, work / ZOO, runs_root=work, readme=None,
                                   merge=False, budget_mb=math.inf, log=log)
    entries = {e["name"]: e for e in doc["models"]}
    rows = []
    for spec in specs:
        outs = [parse_command(t, seed).out for t in spec.train]
        seconds = [runs[o]["seconds"] for o in outs]
        minutes = None if None in seconds else sum(seconds) / 60
        read_back = any(runs[o]["read_back"] for o in outs)
        match = checkpoint_match(spec, work, models[spec.name].entry["checkpoint_sha256"],
                                 shipped_runs)
        rows.append(compare(spec, models[spec.name], entries.get(spec.name),
                            skipped.get(spec.name), match, minutes, read_back,
                            seed_of(spec, seed)))
    return rows


def select(only: str | None, specs: list[ModelSpec]) -> list[ModelSpec]:
    """The specs ``--only`` names (all when None), in the shipped order; an unknown or empty
    name list is an error naming the known ones."""
    known = [s.name for s in specs]
    if only is None:
        return list(specs)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        what = f"unknown --only {', '.join(unknown)}" if unknown else "--only names no model"
        raise EnfoldError(f"{what}; names: {', '.join(known)}")
    return [s for s in specs if s.name in wanted]


def record(root: Path, rows: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """Add ``rows`` (with what produced them, ``run``) to ``root``/retrain.json, replacing
    earlier rows of the same model and seed; returns the whole document."""
    path = root / REPORT
    doc = _read_json(path) or {"rows": {}}
    for row in rows:
        doc["rows"][f"{row['model']}@seed{row['seed']}"] = {**row, **run}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def section(doc: dict[str, Any]) -> str:
    """The ``retrain`` section of docs/RESULTS.md: every row recorded, and the runs behind it."""
    rows = list(doc["rows"].values())
    runs = {r["command"]: r for r in rows}
    lines = [
        "### Retraining the shipped models (`benchmarks/retrain.py`)", "",
        "Each model trained again from its config by the commands that trained it "
        "(`make models`, the registry's `reproduce`), built by `benchmarks/build_zoo.py` into "
        "a scratch zoo, and compared with the shipped artifact measured again in the same run, "
        "on the same held-out data, at the shipped precision. Tolerance: the zoo's own "
        "(`enfold/zoo/checks.py`: 0.05 dB of PSNR, 0.2 points of top-1). Same seed: how "
        "reproducible training is; `--seed`: seed-to-seed variation. Training minutes are "
        "wall-clock, a classifier's include its pretraining. Checkpoint: the retrained file's "
        "sha256 against the registry's, and the weights alone where the shipped run is on "
        "the machine.", "", table(rows), ""]
    for command, r in runs.items():
        lines.append(f"Command: `{command}`. {r['machine']}; took {r['took_minutes']:.1f} min "
                     f"({r['date']}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ", ".join(s.name for s in build_zoo.SHIPPED)
    p.add_argument("--only", help=f"comma-separated models to retrain (default all: {names})")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                   help="where the retrained runs, the scratch zoo and the JSON go "
                   "(default runs/retrain; with --seed N the runs and zoo in ROOT/seedN)")
    p.add_argument("--seed", type=int, default=None,
                   help="train with this seed (--set train.seed=N) to measure seed-to-seed "
                   "variation; default: each config's own seed, as shipped")
    p.add_argument("--zoo", type=Path, default=None,
                   help="the shipped zoo to compare with (default: the package's, enfold/zoo)")
    p.add_argument("--shipped-runs", type=Path, default=ROOT,
                   help="where the shipped models' runs are, to compare weights when the "
                   "checkpoint files differ (default: the repository)")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the results document whose retrain section is rewritten")
    p.add_argument("--no-doc", action="store_true", help="leave docs/RESULTS.md alone")
    args = p.parse_args(argv)
    command = "python benchmarks/retrain.py " + shlex.join(sys.argv[1:] if argv is None
                                                            else argv)
    t0 = time.time()
    try:
        specs = select(args.only, list(build_zoo.SHIPPED))
        rows = retrain(specs, args.root.resolve(), args.seed, args.zoo, args.shipped_runs)
    except EnfoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    run = {"command": command.strip(),
           "machine": f"{machine()} (trainings: OMP_NUM_THREADS={threads})",
           "took_minutes": (time.time() - t0) / 60,
           "date": time.strftime("%Y-%m-%d", time.gmtime())}
    doc = record(args.root, rows, run)
    print(table(rows))
    print(f"{run['machine']}; took {run['took_minutes']:.1f} min; wrote {args.root / REPORT}")
    if not args.no_doc:
        write_section(args.results, SECTION, section(doc))
        print(f"wrote the {SECTION} section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

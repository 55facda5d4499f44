"""Training speed on CPU: images/s of the real training loop, A/B against another checkout, and
images/s with GFLOP/s for each zoo model, eager and with ``--compile``.

A/B mode (``--baseline DIR``, e.g. ``git worktree add /tmp/odkit-base 9f83c43``): each run is a
separate process that imports odkit from one tree (this checkout or DIR) and runs its own
``Trainer`` on BCCD (yolox-nano, 416 px, batch 16, seed 0, its default loader workers and
threads) for ``--steps`` optimiser steps. Runs alternate between the trees (``--rounds``), so
load changes on the machine hit both alike. Per run: images/s over the steps after the first
``--skip`` (the first compile, loader start-up), and the loss of every step. Printed: the
images/s of each run, the ratio new / baseline (median over rounds), both loss curves' summary
and their largest relative difference per step (same seed, same data order: the curves may only
drift apart by float rounding). ``--compile`` adds runs of this checkout with ``--compile``.

Zoo mode (``--zoo``): for each zoo model (or ``--models``), training steps on fixed synthetic
batches (``--zoo-batch`` images at the model's recipe size): images/s and GFLOP/s (convolution
and matrix FLOPs of the forward pass counted by ``torch.utils.flop_counter``, times 3 for forward +
backward), eager and compiled.

    python benchmarks/train_speed.py --baseline /tmp/odkit-base [--steps 100] [--rounds 1] [--compile]
    python benchmarks/train_speed.py --zoo [--models yolox-nano yolox-tiny] [--zoo-batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
# BCCD as the tests find it: $ODKIT_BCCD, else shared/data/bccd beside the repository (or beside the
# working directory, for a checkout made elsewhere such as a worktree)
DEFAULT_DATA = os.environ.get("ODKIT_BCCD") or next(
    (str(p) for p in (REPO.parent / "shared" / "data" / "bccd", Path.cwd().parent / "shared" / "data" / "bccd")
     if p.is_dir()), str(REPO.parent / "shared" / "data" / "bccd"))


# ----------------------------------------------------------------------------------- A/B worker
class _Done(Exception):
    pass


def worker(args: argparse.Namespace) -> int:
    """One training run in the odkit on ``sys.path``; writes per-step losses and times as JSON."""
    import torch

    import odkit
    from odkit.engine.trainer import Trainer

    losses: list[float] = []
    stamps: list[float] = []
    build = Trainer._build_model

    def build_and_watch(self, resuming):  # noqa: ANN001 - the trainer's own signature
        build(self, resuming)

        def hook(_mod, _inp, out):  # noqa: ANN001
            if isinstance(out, dict) and "loss" in out:
                stamps.append(time.perf_counter())
                losses.append(float(out["loss"].detach()))
                if len(losses) > args.steps:
                    raise _Done

        self.model.register_forward_hook(hook)

    Trainer._build_model = build_and_watch
    cfg = {"data": args.data, "model": args.model, "img": args.img, "batch": args.batch, "epochs": 300,
           "seed": 0, "val_interval": 1000, "plots": False, "project": args.project, "name": "run",
           "ema": True}
    if args.compile:
        cfg["compile"] = True
    try:
        Trainer(cfg).fit()
    except _Done:
        pass
    # step k's time: from the end of forward k-1 to the end of forward k (backward, optimiser, EMA,
    # next batch); the last recorded forward (steps + 1) closes step `steps`
    t = stamps[args.skip : args.steps + 1]
    ips = args.batch * (len(t) - 1) / (t[-1] - t[0])
    out = {"tree": str(Path(odkit.__file__).resolve().parents[1]), "compile": args.compile,
           "images_per_s": ips, "losses": losses[: args.steps], "threads": torch.get_num_threads()}
    Path(args.out).write_text(json.dumps(out))
    return 0


def run_tree(tree: Path, args: argparse.Namespace, compile: bool, tmp: str, tag: str) -> dict:
    out = Path(tmp) / f"{tag}.json"
    cmd = [sys.executable, str(HERE), "--worker", "--out", str(out), "--steps", str(args.steps),
           "--skip", str(args.skip), "--data", args.data, "--model", args.model, "--img", str(args.img),
           "--batch", str(args.batch), "--project", str(Path(tmp) / tag)]
    if compile:
        cmd.append("--compile")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        print(proc.stdout[-3000:], proc.stderr[-6000:], file=sys.stderr)
        raise SystemExit(f"{tag}: the training run failed (exit {proc.returncode})")
    res = json.loads(out.read_text())
    print(f"  {tag:<16} {res['images_per_s']:7.2f} img/s  ({time.time() - t0:.0f} s wall, tree {res['tree']})",
          flush=True)
    return res


def curve_summary(losses: list[float]) -> str:
    n = len(losses)
    parts = [(0, min(10, n)), (max(n // 2 - 5, 0), min(n // 2 + 5, n)), (max(n - 10, 0), n)]
    return ", ".join(f"steps {a + 1}-{b}: {statistics.fmean(losses[a:b]):.4f}" for a, b in parts)


def ab(args: argparse.Namespace) -> int:
    base = Path(args.baseline).resolve()
    if not (base / "odkit" / "__init__.py").exists():
        raise SystemExit(f"--baseline {base}: no odkit package there (git worktree add {base} <commit>)")
    print(f"A/B training speed: {args.model} {args.img} px, batch {args.batch}, {args.steps} steps "
          f"(images/s over steps {args.skip + 1}-{args.steps}), data {args.data}\n  new: {REPO}\n  baseline: {base}")
    runs: dict[str, list[dict]] = {"baseline": [], "new": [], "new --compile": []}
    with tempfile.TemporaryDirectory(prefix="odkit-train-speed-") as tmp:
        for r in range(args.rounds):
            runs["baseline"].append(run_tree(base, args, False, tmp, f"baseline-{r + 1}"))
            runs["new"].append(run_tree(REPO, args, False, tmp, f"new-{r + 1}"))
            if args.compile:
                runs["new --compile"].append(run_tree(REPO, args, True, tmp, f"new-compile-{r + 1}"))
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in runs.items() if v}
    print("\nimages/s (median over rounds):")
    for k, v in med.items():
        print(f"  {k:<14} {v:7.2f}   ratio to baseline {v / med['baseline']:.2f}x")
    b_loss = runs["baseline"][0]["losses"]
    report = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "images_per_s": med,
              "runs": {k: [x["images_per_s"] for x in v] for k, v in runs.items()}, "curves": {}}
    print(f"\nloss curves over the first {args.steps} steps (mean loss per window):")
    print(f"  {'baseline':<14} {curve_summary(b_loss)}")
    for k in ("new", "new --compile"):
        if not runs[k]:
            continue
        c = runs[k][0]["losses"]
        n = min(len(c), len(b_loss))
        rel = [abs(c[i] - b_loss[i]) / max(abs(b_loss[i]), 1e-12) for i in range(n)]
        print(f"  {k:<14} {curve_summary(c)}")
        print(f"  {'':<14} max relative difference to baseline per step: {max(rel):.2e} "
              f"(step {rel.index(max(rel)) + 1}); mean {statistics.fmean(rel):.2e}")
        report["curves"][k] = {"max_rel_diff": max(rel), "mean_rel_diff": statistics.fmean(rel)}
    report["curves"]["baseline_losses"] = b_loss
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


# ----------------------------------------------------------------------------------- zoo mode
def zoo_speed(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from odkit.engine import speed
    from odkit.engine.optim import build_optimizer
    from odkit.models import zoo

    torch.set_num_threads(args.threads)
    names = args.models or zoo.available()
    print(f"zoo training speed: batch {args.zoo_batch}, {args.zoo_steps} timed steps after {args.zoo_warmup} warm-up steps, "
          f"{args.threads} threads, synthetic batches")
    rows = []
    for name in names:
        size = int(zoo.recipe(name)["img_size"])
        g = torch.Generator().manual_seed(0)
        images = torch.rand(args.zoo_batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        targets = []
        for _ in range(args.zoo_batch):
            xy = torch.rand(6, 2, generator=g) * size * 0.7
            wh = torch.rand(6, 2, generator=g) * size * 0.25 + 8
            targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1),
                            "labels": torch.randint(0, 3, (6,), generator=g)})
        row: dict = {"model": name, "img": size}
        for comp in (False, True) if not args.no_compile else (False,):
            torch.manual_seed(0)
            model = zoo.build(name, num_classes=3, img_size=size).train().to(memory_format=torch.channels_last)
            speed.prepare_training_model(model)
            opt = build_optimizer(model, "sgd", lr=1e-4)
            speed.foreach_optimizer(opt)
            if comp:
                speed.compile_for_training(model)

            def step(m=model, o=opt, x=images, t=targets) -> None:
                loss = m(x, t)["loss"]
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()

            key = "compiled" if comp else "eager"
            try:
                if not comp:
                    # forward FLOPs x 3 (backward ~ 2 x forward): torch's counter miscounts the
                    # weight gradient of grouped convolutions (MobileNet's depthwise layers by ~30x)
                    with FlopCounterMode(display=False) as fc:
                        model(images, targets)
                    row["gflop_per_step"] = 3 * fc.get_total_flops() / 1e9
                for _ in range(args.zoo_warmup):
                    step()
                t0 = time.perf_counter()
                for _ in range(args.zoo_steps):
                    step()
                dt = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - report and go on with the next model
                print(f"  {name} {key}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=sys.stderr)
                continue
            row[f"{key} img/s"] = args.zoo_batch * args.zoo_steps / dt
            row[f"{key} GFLOP/s"] = row["gflop_per_step"] * args.zoo_steps / dt
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
    cols = ["eager img/s", "eager GFLOP/s", "compiled img/s", "compiled GFLOP/s"]
    print(f"\n{'model':<26} {'img':>4} {'GFLOP/step':>10} " + " ".join(f"{c:>16}" for c in cols))
    for r in rows:
        vals = " ".join(f"{r[c]:>16.2f}" if c in r else f"{'-':>16}" for c in cols)
        print(f"{r['model']:<26} {r['img']:>4} {r.get('gflop_per_step', float('nan')):>10.1f} {vals}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "batch": args.zoo_batch, "threads": args.threads},
                                              indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="another odkit checkout to compare with (A/B mode)")
    ap.add_argument("--zoo", action="store_true", help="images/s and GFLOP/s of each zoo model")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--skip", type=int, default=5, help="first steps left out of images/s")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="A/B: also runs of this checkout with --compile")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default="yolox-nano")
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", nargs="+", help="zoo mode: these models (default: all)")
    ap.add_argument("--zoo-batch", type=int, default=4)
    ap.add_argument("--zoo-steps", type=int, default=3)
    ap.add_argument("--zoo-warmup", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="zoo mode: eager only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.zoo:
        return zoo_speed(args)
    if not args.baseline:
        ap.error("give --baseline DIR (A/B) or --zoo")
    return ab(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Quality report (not a test): how well the dense face detector finds faces, from scratch and
from ImageNet weights, in one run.

    .venv/bin/python bench/quality.py [--tfdir demo_out/tfrecords] [--heldout demo_out/heldout-tf]
        [--weights ../shared/weights/mobilenet_v2_1.0_imagenet_notop.weights.h5]
        [--imagenet-epochs 8 --fine-tune-epochs 4] [--work demo_out/bench] [--fresh] [--json PATH]

Two fits with `trainer.fit.fit`, each evaluated with `trainer.tasks.evaluate` (COCO AP@0.5 over
all faces, pycocotools) on the test split and on the held-out photos (faces never seen in
training):

- scratch: the demo's settings (scripts/demo.sh step 7 without ImageNet): MobileNetV2 alpha 0.35
  at 96 px, batch 32, lr 3e-3, seed 0, `--weights none --fine-tune-layers all --epochs 20
  --patience 20`;
- imagenet: MobileNetV2 alpha 1.0 at 224 px from the shared ImageNet weights (see
  ../shared/weights/README.md: benchmarks and quality reports only), default phases: frozen
  backbone for --imagenet-epochs, then fine-tuning for --fine-tune-epochs.

Runs go to WORK/scratch_96 and WORK/imagenet_224 (bench/detect.py reuses the second); a
finished run with the same records and settings is reused unless --fresh. Goals (issue 13):
scratch test AP@0.5 >= 0.6 and held-out >= 0.5; imagenet at 224 px test AP@0.5 >= 0.9.
Fit times depend on what else runs on the machine: the load average is printed with them.
Needs the demo's TFRecords (`make demo`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

try:
    from bench import runs
except ImportError:  # run as a script: bench/ is on sys.path, the project root is not yet
    import runs

GOALS = {"scratch": {"test": 0.6, "heldout": 0.5}, "imagenet": {"test": 0.9, "heldout": None}}


def scratch_config():
    """scripts/demo.sh step 7's from-scratch fit (COMMON + SCRATCH)."""
    from trainer.fit import FitConfig

    return FitConfig(backbone="mobilenetv2", alpha=0.35, image_size=96, batch_size=32, lr=3e-3, seed=0,
                     weights="none", fine_tune_layers="all", epochs=20, patience=20)


def measure(name: str, config, args) -> dict:
    from trainer.tasks import evaluate

    run_dir = Path(args.work) / name
    print(f"[{time.strftime('%H:%M:%S')}] {name}: fitting into {run_dir} (load average {runs.load_avg()})",
          flush=True)
    run, fit_s, reused = runs.fit_run(args.tfdir, run_dir, config, reuse=not args.fresh)
    row = {"name": name, "image_size": config.image_size, "alpha": config.alpha, "weights": config.weights,
           "phases": config.phases(), "fit_s": round(fit_s, 1), "reused": reused, "load_avg": runs.load_avg()}
    epochs = json.loads((run / "config.json").read_text()).get("results", {}).get("epochs")
    row["epochs_run"] = epochs
    for split_name, tfdir in (("test", args.tfdir), ("heldout", args.heldout)):
        m = evaluate(run, tfdir, split="test", out=run / f"eval_{split_name}")
        row[split_name] = {"ap50": m["ap50"], "ap50_95": m["ap50_95"], "images": m["images"]}
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done", flush=True)
    return row


def goal_text(value, goal) -> str:
    if goal is None:
        return "(no goal)"
    ok = value is not None and value >= goal
    return f"goal >= {goal:.1f}: {'met' if ok else 'NOT met'}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tfdir", type=Path, default=runs.DEMO_TFDIR)
    p.add_argument("--heldout", type=Path, default=runs.DEMO_HELDOUT)
    p.add_argument("--weights", type=Path, default=runs.SHARED_WEIGHTS)
    p.add_argument("--imagenet-epochs", type=int, default=8)
    p.add_argument("--fine-tune-epochs", type=int, default=4)
    p.add_argument("--work", type=Path, default=runs.WORK)
    p.add_argument("--fresh", action="store_true", help="train again even when a matching run is there")
    p.add_argument("--only", choices=("scratch", "imagenet"), default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    runs.require_records(args.tfdir, args.heldout)
    runs.require_weights(args.weights)

    t0 = time.perf_counter()
    plan = [("scratch_96", "scratch", scratch_config()),
            ("imagenet_224", "imagenet", runs.imagenet_config(224, args.weights, epochs=args.imagenet_epochs,
                                                              fine_tune_epochs=args.fine_tune_epochs))]
    rows = []
    for name, kind, config in plan:
        if args.only and args.only != kind:
            continue
        row = measure(name, config, args)
        row["kind"] = kind
        rows.append(row)

    print(f"\nDense face detector quality: AP@0.5 (COCO, all faces), test split "
          f"({rows[0]['test']['images']} images) and held-out photos ({rows[0]['heldout']['images']} images)")
    header = (f"{'fit':<34} {'fit time':>9} {'test AP@0.5':>12}  {'goal':<22} {'held-out AP@0.5':>16}  "
              f"{'goal':<22} {'AP@[.5:.95] test/held':>22}")
    print(header)
    print("-" * len(header))
    for r in rows:
        g = GOALS[r["kind"]]
        phases = " + ".join(str(ph["epochs"]) for ph in r["phases"])
        label = (f"scratch 96px a0.35 {phases} ep" if r["kind"] == "scratch"
                 else f"ImageNet* 224px a1.0 {phases} ep")
        fit_time = f"{r['fit_s']:.0f} s" + (" (r)" if r["reused"] else "")
        print(f"{label:<34} {fit_time:>9} {runs.fmt(r['test']['ap50']):>12}  "
              f"{goal_text(r['test']['ap50'], g['test']):<22} {runs.fmt(r['heldout']['ap50']):>16}  "
              f"{goal_text(r['heldout']['ap50'], g['heldout']):<22} "
              f"{runs.fmt(r['test']['ap50_95']) + ' / ' + runs.fmt(r['heldout']['ap50_95']):>22}")
    print(f"* {runs.WEIGHTS_NOTE}.")
    if any(r["reused"] for r in rows):
        print("(r): a reused run; its fit time is when it was trained (--fresh trains again)")
    done = ", ".join(f"{r['name']} {r['epochs_run']}" for r in rows)
    print(f"epochs run (early stopping may stop sooner): {done}; "
          f"load average now {runs.load_avg()}; wall {time.perf_counter() - t0:.0f} s")
    runs.write_rows(args.json, args, rows)
    return rows


if __name__ == "__main__":
    main()

"""Peak memory of every image-reading command on decompression bombs, against the same command
on a small image, measured in the same run.

Each command runs as a child process (what the `datatool` and `trainer` scripts run);
its peak resident memory is the kernel's `ru_maxrss` for that child (`os.wait4`). Inputs: a
dataset of small images (the baseline), the same plus a PNG whose header claims 237 MP (15400 x
15400) or 900 MP (30000 x 30000) with one row of pixels, and a complete 237 MP PNG of zeros
(decodable, 230 KB on disk); augment also reads a "billion laughs" recipe. `trainer predict`
needs a run: a tiny one (weights none, 32 px, 1 epoch) is trained here unless --run is given.

Goal (issue 14): each command's peak on a bomb stays within 500 MB of its baseline: the bomb is
refused from its header, never decoded. Prints one row per command and input, and exits 1 if a
row misses the goal or a command printed a traceback.

    .venv/bin/python bench/bombs.py [--run RUN] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
GOAL_MB = 500
DATATOOL = ["-c", "from datatool.cli import main; main()"]  # the console scripts, in this interpreter
TRAINER = ["-c", "from trainer.cli import main; main()"]
BASELINE = "small images (baseline)"
SIDES = {"bomb 237 MP header": 15400, "bomb 900 MP header": 30000, "zeros 237 MP, decodable": 15400}


def peak_mb(args: list[str], *, env: dict) -> tuple[float, int, str]:
    """(peak RSS in MB, exit code, output) of one child process."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return usage.ru_maxrss / 1024, proc.returncode, log.read().decode("utf-8", "replace")


def make_inputs(work: Path) -> dict[str, Path]:
    from bombfiles import header_bomb, zero_png
    from conftest import make_face_dataset

    base = make_face_dataset(work / "small", n=12, size=64)
    datasets = {BASELINE: base}
    for name, side in SIDES.items():
        ds = work / name.split(",")[0].replace(" ", "-")
        shutil.copytree(base, ds)
        big = ds / "images" / "big.png"
        (header_bomb if "header" in name else zero_png)(big, side, side)
        big.with_suffix(".json").write_text(json.dumps({
            "version": "6.3.1", "flags": {}, "imagePath": "big.png", "imageData": None,
            "imageWidth": side, "imageHeight": side,
            "shapes": [{"label": "face", "points": [[10, 10], [200, 200]], "shape_type": "rectangle",
                        "group_id": None, "description": "", "flags": {}, "mask": None}]}))
        datasets[name] = ds
    laughs = "".join(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9) if k else ', '.join(['lol'] * 9)}]\n"
                     for k in range(9))
    (work / "laughs.yaml").write_text(laughs + "transform: {__class_fullname__: Compose, transforms: [], x: *l8}\n")
    return datasets


def tiny_run(work: Path, small: Path, env: dict) -> Path:
    tf = work / "small-tf"
    for args in ([*DATATOOL, "split", str(small), "--out", str(tf)],
                 [*TRAINER, "fit", str(tf), "--out", str(work / "run"), "--weights", "none",
                  "--image-size", "32", "--alpha", "0.35", "--epochs", "1", "--batch-size", "8"]):
        r = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"could not make the tiny run: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return work / "run"


def commands(ds: Path, out: Path, run: Path, laughs: Path) -> dict[str, list[str]]:
    dt, tr = DATATOOL, TRAINER
    return {
        "validate": [*dt, "validate", str(ds)],
        "augment": [*dt, "augment", str(ds), "--out", str(out / "aug"), "--factor", "1", "--workers", "2"],
        "split": [*dt, "split", str(ds), "--out", str(out / "tf")],
        "crop": [*dt, "crop", str(ds), "--out", str(out / "crop"), "--person", "me"],
        "preview": [*dt, "preview", str(ds), "--grid", str(out / "p.png"), "--n", "40"],
        "preview --recipe": [*dt, "preview", str(ds), "--grid", str(out / "pr.png"), "--recipe", "default",
                             "--n", "40"],
        "convert -> yolo": [*dt, "convert", str(ds), "--from", "labelme", "--to", "yolo", "--out", str(out / "y")],
        "stats": [*dt, "stats", str(ds)],
        "report": [*dt, "report", str(ds), "--out", str(out / "report.html")],
        "trainer predict": [*tr, "predict", str(run), str(ds / "images"), "--out", str(out / "pred")],
        "augment, billion-laughs recipe": [*dt, "augment", str(ds), "--out", str(out / "aug-l"), "--recipe",
                                           str(laughs)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="A detector run for trainer predict.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows as JSON.")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("FACEKIT_MAX_PIXELS", None)
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="facekit-bombs-") as tmp:
        work = Path(tmp)
        datasets = make_inputs(work)
        run = args.run or tiny_run(work, datasets[BASELINE], env)
        print(f"{'command':<32} {'input':<26} {'peak MB':>8} {'vs baseline':>12} {'exit':>5}  verdict")
        baselines: dict[str, float] = {}
        for cmd in commands(Path("DS"), Path("OUT"), run, work / "laughs.yaml"):
            laughs = cmd.startswith("augment, billion")
            for label, ds in datasets.items():
                if laughs and label != BASELINE:
                    continue
                out = work / "out" / f"{len(rows)}"
                mb, code, text = peak_mb(commands(ds, out, run, work / "laughs.yaml")[cmd], env=env)
                if label == BASELINE and not laughs:
                    baselines[cmd] = mb
                delta = mb - baselines["augment" if laughs else cmd]
                bad = "Traceback" in text or "DecompressionBomb" in text or delta > GOAL_MB
                hostile = laughs or label != BASELINE
                named = "big.png" in text or "laughs.yaml" in text
                failed |= bad
                verdict = "MISSED" if bad else ("refused, named" if hostile and named else
                                                "exit 0, not named on screen" if hostile and code == 0 else "ok")
                rows.append({"command": cmd, "input": "billion-laughs recipe" if laughs else label,
                             "peak_mb": round(mb, 1), "delta_mb": round(delta, 1), "exit": code, "verdict": verdict})
                print(f"{cmd:<32} {rows[-1]['input']:<26} {mb:>8.0f} {delta:>+11.0f}M {code:>5}  {verdict}",
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)
    print(f"\ngoal: every bomb within {GOAL_MB} MB of the same command's baseline: "
          f"{'missed' if failed else 'met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

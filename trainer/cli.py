"""`trainer`: fit / evaluate / predict / export / enroll. TensorFlow is imported inside each command;
TensorFlow's start-up noise is quieted once, by the CLI group (`datatool.core.tfquiet`). What a
run does is looked up in `trainer.tasks` (its task and head), never branched on here."""

from __future__ import annotations

from pathlib import Path

import click

from datatool.core.clikit import CONTEXT, FacekitGroup

from . import __version__
from . import tasks as T
from .distribute import STRATEGIES
from .export import FORMATS as EXPORT_FORMATS
from .recognizer import MODES
from .weights import BACKBONES

OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing output files (never deletes inputs).")
# The same `--detector` as `datatool` (datatool.cli._common.detector_option); defined here because
# the trainer does not import datatool's CLI. None: the command's default (mtcnn for a recognizer).
DETECTOR = click.option(
    "--detector", "detector", default=None, metavar="haar|mtcnn|RUN|none",
    help="Face detector: 'haar' (OpenCV cascade, fast), 'mtcnn' (stronger, needs TensorFlow), the path of "
         "a trained detection run folder, or 'none' (each input is already a face crop).")


@click.group(cls=FacekitGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="trainer")
def cli():
    """Train and use face detectors and recognizers from `datatool split` TFRecords.

    \b
    Example:
      trainer fit datasets/me-tf --out runs/me --backbone mobilenetv2
      trainer evaluate runs/me datasets/me-tf
      trainer predict runs/me photo.jpg --out predictions/
      trainer export runs/me --format tflite

    Images over 120,000,000 pixels are refused before decoding (decompression bombs); set
    FACEKIT_MAX_PIXELS=N in the environment to raise the limit.
    """


def main() -> None:
    cli(prog_name="trainer")


@cli.command()
@click.argument("tfdir", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Run folder to create.")
@click.option("--backbone", type=click.Choice(BACKBONES), default=BACKBONES[0], show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True, help="Square input size in pixels.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="MobileNetV2 width multiplier.")
@click.option("--weights", default="imagenet", show_default=True, metavar="imagenet|none|PATH",
              help="Backbone start: ImageNet (downloaded once by Keras), none (random), or a local "
                   ".h5 / .weights.h5 file of the backbone without its top.")
@click.option("--epochs", type=int, default=10, show_default=True,
              help="Epochs of the first phase (heads only; everything with --fine-tune-layers all).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate of the first phase.")
@click.option("--fine-tune-layers", default=None, metavar="N|all",
              help="Backbone layers (Keras layers, from the top) to unfreeze in the second phase; "
                   "'all' trains everything in one phase. Default: the head's (dense: 12 for mobilenetv2, "
                   "single: 10; 4 for vgg16), 'all' with --weights none.")
@click.option("--fine-tune-epochs", type=int, default=5, show_default=True)
@click.option("--fine-tune-lr", type=float, default=None, help="Learning rate of fine-tuning [default: lr/10].")
@click.option("--box-weight", type=float, default=None,
              help="Weight of the box loss next to the face-score loss [default: the head's: dense 2 "
                   "(GIoU next to focal loss), single 20 (next to the presence BCE)].")
@click.option("--patience", type=int, default=5, show_default=True, help="Early-stopping patience (epochs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--feature-cache/--no-feature-cache", default=True, show_default=True,
              help="Compute the frozen backbone layers' output once per image and train the rest on it "
                   "(same model, much faster epochs).")
@click.option("--feature-cache-ram", type=float, default=0.25, show_default=True, metavar="SHARE",
              help="Largest share of the available RAM the feature cache may take; a larger cache goes to "
                   "disk under RUN/feature_cache (0: always on disk).")
@click.option("--task", type=click.Choice(T.TASK_NAMES), default=None,
              help="Checked against the task the TFRecords hold (read from them by default).")
@click.option("--head", type=click.Choice(T.HEADS), default=None,
              help="The task's head kind [default: " + ", ".join(f"{t}: {h}" for t, h in T.DEFAULT_HEAD.items()) + "].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="tf.distribute strategy: mirrored (every local GPU), multiworker (several machines, from the "
                   "TF_CONFIG environment variable; run the same command on each), none (one device), auto "
                   "(mirrored with more than one GPU, else none). --batch-size is the global batch.")
@OVERWRITE
@click.option("--resume", is_flag=True, help="Continue an interrupted fit of --out from its last checkpoint "
                                              "(with the options it started with); it goes on exactly as an "
                                              "uninterrupted fit would.")
def fit(tfdir, out, backbone, image_size, alpha, weights, epochs, batch_size, lr, fine_tune_layers,
        fine_tune_epochs, fine_tune_lr, box_weight, patience, seed, feature_cache, feature_cache_ram, task, head,
        strategy, overwrite, resume):
    """Train a face detector or, on `split --task identity` records, a face recognizer (softmax
    over the people of labels.txt) on TFRecords from `datatool split`.

    The detector's default head, `--head dense`, scores every cell of the backbone's stride-8 and
    stride-16 feature maps and regresses a box there, then keeps the best boxes (non-maximum
    suppression): it finds every face, from about 16 px to the whole image. `--head single` is
    the tutorials' model (face presence + one box, the largest face), kept for old runs.
    The backbone (without its top) is frozen while the heads train, then its top N layers are
    fine-tuned at a lower learning rate. RUN gets model.keras (best validation loss), history.csv, curves.png, logs/
    (TensorBoard) and config.json (everything needed to reproduce the fit). The frozen layers'
    output is computed once per image and the rest trained on it (in memory, or under
    RUN/feature_cache when large); --no-feature-cache runs every layer on every batch instead.

    \b
    Example:
      trainer fit datasets/me-tf --out runs/me --backbone mobilenetv2 --epochs 10
      trainer fit datasets/me-tf --out runs/me-vgg --backbone vgg16 --image-size 120 \\
          --weights ~/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
      trainer fit datasets/me-tf --out runs/scratch --weights none --image-size 96 --alpha 0.35 --epochs 20
      trainer fit datasets/me-tf --out runs/one-box --head single
      trainer fit datasets/me-tf --out runs/me --resume
      trainer fit datasets/people-tf --out runs/people --task identity --image-size 160
      TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
          trainer fit datasets/me-tf --out runs/me --strategy multiworker   # and index 1 on the other machine
    """
    from .fit import FitConfig, fit as run_fit, parse_fine_tune_layers

    config = FitConfig(backbone=backbone, image_size=image_size, alpha=alpha, weights=weights, epochs=epochs,
                       batch_size=batch_size, lr=lr, fine_tune_layers=parse_fine_tune_layers(fine_tune_layers),
                       fine_tune_epochs=fine_tune_epochs, fine_tune_lr=fine_tune_lr, box_weight=box_weight,
                       patience=patience, seed=seed, task=task, head=head, feature_cache=feature_cache,
                       feature_cache_ram=feature_cache_ram)
    try:
        record = run_fit(tfdir, out, config=config, overwrite=overwrite, resume=resume, strategy=strategy,
                         log=click.echo)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: continue with `trainer fit {tfdir} --out {out} --resume`", err=True)
        raise SystemExit(130)
    if not record["worker"]["chief"]:
        click.echo(f"done: worker {record['worker']['index']} finished; the chief saved the run in its {out}")
        return
    res = record["results"]
    click.echo(f"done: {out}/model.keras ({res['epochs']} epochs, best epoch {res['best_epoch']}); "
               f"curves in {out}/curves.png")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("tfdir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--iou", type=float, default=0.5, show_default=True,
              help="IoU a found face's box needs to count as well placed.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Presence score that means 'face'; for a recognizer, the least probability that answers a "
                   "name rather than 'unknown'.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Folder for metrics.json and pr_curve.png (confusion_matrix.png) [default: RUN].")
@click.option("--batch-size", type=int, default=32, show_default=True)
@OVERWRITE
def evaluate(run, tfdir, split, iou, threshold, out, batch_size, overwrite):
    """Measure a trained detector on one split: presence accuracy / precision / recall / F1 / AUC,
    mean IoU of found faces, share with IoU >= --iou, AP@0.5 and AP@[.5:.95] (pycocotools).

    Writes metrics.json and pr_curve.png into RUN (or --out); refuses to replace them (and
    worst.png) without --overwrite. A one-box model finds at most one
    face per image; on multi-face data the figures say so. For a recognizer (identity run):
    accuracy, per-person precision / recall / F1, how many answers --threshold turns into
    'unknown', and confusion_matrix.png.

    \b
    Example:
      trainer evaluate runs/me datasets/me-tf
      trainer evaluate runs/me datasets/me-tf --split val --iou 0.7 --out reports/me-val
      trainer evaluate runs/people datasets/people-tf --threshold 0.8
    """
    from .models import read_config

    task = T.of_run(read_config(run), run)
    metrics = T.evaluate(run, tfdir, split=split, iou=iou, threshold=threshold, out=out, batch_size=batch_size,
                         overwrite=overwrite)
    for line in task.summary_lines(metrics):
        click.echo(line)
    click.echo(f"wrote {(out or run)}/metrics.json and {task.report}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Folder for annotated copies and predictions.csv/json [default: RUN/predictions].")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Presence score that means 'face'; for a recognizer, the least probability to answer a "
                   "name (below it: 'unknown').")
@click.option("--source", default=None, metavar="CAMERA",
              help="Live window instead of files: a camera index (0), a device path or a video file.")
@DETECTOR
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="Recognizer: the trained softmax, the nearest enrolled face (`trainer enroll`), or "
                   "enrolled when the run has enrolments [default: auto].")
@click.option("--max-distance", type=float, default=None,
              help="Recognizer, enrolled mode: the largest cosine distance to the nearest enrolled face "
                   "that still names it [default: 0.25].")
@click.option("--margin", type=float, default=None,
              help="Recognizer with a detector: margin around each face, as a share of its size "
                   "[default: the one the training crops used, else 0.2].")
@click.option("--max-frames", type=int, default=None, hidden=True)
@OVERWRITE
def predict(run, inputs, out, threshold, source, detector, mode, max_distance, margin, max_frames, overwrite):
    """Find the face in images, folders and videos (annotated copies + CSV/JSON of boxes and
    scores), or live on a camera in a window with FPS (Q or Esc quits).

    With a recognizer (a run trained on identity records) it names faces instead: --detector
    finds every face in a full frame (mtcnn by default; 'none' when the inputs are face crops),
    each is cut as `datatool crop` cuts them and answered with a name and its probability, or
    'unknown' below --threshold. Once people are enrolled (`trainer enroll`) the answer is the
    nearest enrolled face (--mode).

    \b
    Example:
      trainer predict runs/me photo.jpg holiday/ --out predictions/
      trainer predict runs/me clip.mp4 --out predictions/ --threshold 0.7
      trainer predict runs/me --source 0
      trainer predict runs/people group.jpg --detector mtcnn --threshold 0.8
      trainer predict runs/people datasets/people/people/bob --detector none --mode softmax
      trainer predict runs/people --source 0 --detector haar
    """
    from .models import read_config

    task = T.of_run(read_config(run), run)
    options = {"detector": detector, "mode": mode, "max_distance": max_distance, "margin": margin}
    given = [name for name, value in options.items() if value is not None]
    foreign = [name for name in given if name not in task.predict_options]
    if foreign:
        others = sorted({t.title + "s" for t in T.TASKS.values() if set(foreign) <= set(t.predict_options)})
        raise click.UsageError(f"{run} is a {task.title}: {_flags(foreign)} "
                               f"{'is' if len(foreign) == 1 else 'are'} for {' and '.join(others) or 'other runs'}")
    options = {name: options[name] for name in given}
    if source is not None:
        if inputs:
            raise click.UsageError("give either INPUT files or --source, not both")
        stats = task.live(run, source, threshold=threshold, max_frames=max_frames, **options)
        click.echo(f"{stats['frames']} frames, {stats['fps']:.1f} FPS")
        return
    if not inputs:
        raise click.UsageError("nothing to predict: give images, folders or videos (or --source CAMERA)")
    from .predict import UnreadableImages

    out = out or Path(run) / "predictions"
    try:
        rows = task.predict(run, inputs, out=out, threshold=threshold, overwrite=overwrite, **options)
    except UnreadableImages as e:  # the others are done: say so, then exit 1 naming the bad file
        click.echo(task.predict_summary(e.rows, threshold=threshold, out=out))
        raise
    click.echo(task.predict_summary(rows, threshold=threshold, out=out))


def _flags(names) -> str:
    flags = [f"--{n.replace('_', '-')}" for n in names]
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="tflite", show_default=True)
@click.option("--quantize", is_flag=True, help="TFLite with int8 weights (dynamic-range quantization).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Output path [default: RUN/export/saved_model, model.tflite, model_int8.tflite or model.onnx].")
@OVERWRITE
def export(run, fmt, quantize, out, overwrite):
    """Export a trained detector for serving or phones: a SavedModel, TFLite or ONNX. Input: RGB
    0-255 at the model's size. A dense detector's SavedModel outputs `boxes`, `scores` (after NMS),
    `presence` and `box`; its TFLite and ONNX files hold the network up to the per-cell scores and
    boxes, with `<name>.json` beside them giving the NMS settings that `trainer.export.run_tflite` /
    `run_onnx` apply (the same code as Keras). A one-box run outputs `presence` and `box`.
    ONNX needs `pip install "facekit[onnx]"`.

    \b
    Example:
      trainer export runs/me --format saved_model
      trainer export runs/me --format tflite --quantize
      trainer export runs/me --format onnx
    """
    from .export import export as run_export

    path = run_export(run, fmt=fmt, quantize=quantize, out=out, overwrite=overwrite)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    click.echo(f"wrote {path} ({size / 1e6:.1f} MB)")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--person", required=True, help="The name predict will answer for these faces.")
@DETECTOR
@click.option("--margin", type=float, default=None,
              help="With a detector: margin around the face, as a share of its size "
                   "[default: the one the training crops used, else 0.2].")
@click.option("--overwrite", is_flag=True, help="Replace the faces of a person already enrolled.")
def enroll(run, images, person, detector, margin, overwrite):
    """Add a person to a trained recognizer without retraining: stores the embedding of each face
    (the trained backbone's pooled features, L2-normalized) in RUN/enrolled.npz. `trainer predict`
    then answers with the nearest enrolled face (cosine distance), or 'unknown' past
    --max-distance. Enroll the trained people too if they should be named in that mode.

    IMAGES are face crops (files or folders; --detector none, the default) or photos in which
    --detector haar|mtcnn|RUN finds the one face (images with no face or several are skipped).

    \b
    Example:
      trainer enroll runs/people --person dave datasets/dave/people/dave
      trainer enroll runs/people --person erin photos/erin/ --detector mtcnn
      trainer enroll runs/people --person dave new-crops/ --overwrite
    """
    from .recognizer import enroll_person

    if not images:
        raise click.UsageError(f"no images of {person}: give face crops or photos (files or folders)")
    result = enroll_person(run, person, images, overwrite=overwrite, detector=detector or "none", margin=margin)
    for why in result["skipped"]:
        click.echo(f"skipped: {why}", err=True)
    people = ", ".join(f"{n} ({c})" for n, c in result["people"].items())
    click.echo(f"enrolled {result['added']} faces of {person} in {result['seconds']:.1f} s; "
               f"{result['path']} now holds: {people}")

"""`trainer fit`: transfer learning in phases, resumable, with everything needed to reproduce it.

Phases (each one `keras.Model.fit`, epochs numbered on from the previous phase):
1. `heads`: the backbone frozen, the head trained at `lr`;
2. `fine_tune`: the top `fine_tune_layers` Keras layers of the backbone unfrozen (BatchNorm kept
   in inference mode) at `fine_tune_lr` (default `lr / 10`), for `fine_tune_epochs`.
With `fine_tune_layers='all'` there is one phase, `train`, that trains everything for `epochs`:
the default with `weights='none'`, since a random backbone has nothing worth freezing.

RUN/ holds `config.json` (written first, completed at the end), `state.json` (phase progress),
`checkpoint/` (per-epoch resumable state, `keras.callbacks.BackupAndRestore`), `best.weights.h5`
(lowest validation loss so far), `history.csv`, `logs/` (TensorBoard), and at the end
`model.keras` (the best weights) and `curves.png`.

Resuming is exact: the checkpoint holds the weights, the optimizer's state (its step and learning
rate included) and the epoch (`BackupAndRestore`), plus the state of the callbacks that have one
(early stopping's and the learning-rate schedule's counters, the best loss so far); the training
order of an epoch is a function of the seed and the epoch alone (`trainer.data.shuffle_records`).
So a fit interrupted and resumed ends with the history and weights of one that was not.

`strategy` (`--strategy`, `trainer.distribute`) runs the fit under a `tf.distribute` strategy:
the model is built and compiled inside its scope, the input shared out among workers by shard
file, and only the chief writes RUN.

What is built, compiled and fed as targets comes from the task's entry in `trainer.tasks` (the
records' task and `--head`); the phases, callbacks and run folder are the same for every task.

Each phase is a separate step (`train_phase`) on a model built from named parts (`preprocess`,
`backbone`, `head`). Where part of the backbone is frozen, its activations are computed once per
image and the trainable part is fitted on them (`trainer.feature_cache`; `feature_cache=False`,
`--no-feature-cache`, turns it off); the model saved is the same either way.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from datatool.core.errors import DatatoolError, OutputExistsError
from datatool.core.fsutil import command_line, prepare_output_dir, versions, write_json_atomic

from . import data as tdata
from . import tasks
from .distribute import keras_multiworker

HISTORY = "history.csv"


class FitError(DatatoolError):
    """A fit that cannot start or continue."""


@dataclass(frozen=True)
class FitConfig:
    """Everything a fit depends on besides the data. `fine_tune_layers`: None (the backbone's
    default, or 'all' with weights='none'), an int, or 'all'."""

    backbone: str = "mobilenetv2"
    image_size: int = 224
    alpha: float = 1.0
    weights: str = "imagenet"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    fine_tune_layers: int | str | None = None
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None
    box_weight: float | None = None  # None: the head's (trainer.tasks.Task.box_weight)
    patience: int = 5
    seed: int = 0
    task: str | None = None  # None: the records' task
    head: str | None = None  # None: the task's default head (trainer.tasks.DEFAULT_HEAD)
    feature_cache: bool = True  # frozen layers' activations computed once (trainer.feature_cache)
    feature_cache_ram: float = 0.25  # share of available RAM the cache may take; beyond it, on disk

    @property
    def from_scratch(self) -> bool:
        return str(self.weights).lower() == "none"

    def resolved_fine_tune_layers(self):
        if self.fine_tune_layers is None:
            return "all" if self.from_scratch else tasks.get(self.task, self.head).fine_tune_layers[self.backbone]
        return self.fine_tune_layers

    def resolved_box_weight(self) -> float:
        return tasks.get(self.task, self.head).box_weight if self.box_weight is None else float(self.box_weight)

    def phases(self) -> list[dict]:
        """`[{name, fine_tune_layers, epochs, lr}]` in order."""
        n = self.resolved_fine_tune_layers()
        if n == "all":
            return [{"name": "train", "fine_tune_layers": "all", "epochs": self.epochs, "lr": self.lr}]
        out = [{"name": "heads", "fine_tune_layers": 0, "epochs": self.epochs, "lr": self.lr}]
        if int(n) > 0 and self.fine_tune_epochs > 0:
            out.append({"name": "fine_tune", "fine_tune_layers": int(n), "epochs": self.fine_tune_epochs,
                        "lr": self.fine_tune_lr if self.fine_tune_lr is not None else self.lr / 10})
        return out

    def validate(self) -> None:
        from .weights import BACKBONES

        problems = []
        if self.backbone not in BACKBONES:
            problems.append(f"--backbone: {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if self.image_size < 32:
            problems.append(f"--image-size: {self.image_size} is too small (at least 32)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1")
        if self.fine_tune_epochs < 0:
            problems.append("--fine-tune-epochs: must be 0 or more")
        if not 0 <= self.feature_cache_ram <= 1:
            problems.append(f"--feature-cache-ram: {self.feature_cache_ram} is not a share between 0 and 1")
        if self.lr <= 0 or (self.fine_tune_lr is not None and self.fine_tune_lr <= 0):
            problems.append("--lr: must be positive")
        n = self.fine_tune_layers
        if n is not None and n != "all" and (not isinstance(n, int) or n < 0):
            problems.append(f"--fine-tune-layers: {n!r} is not a number >= 0 or 'all'")
        if problems:
            raise FitError("; ".join(problems))


def parse_fine_tune_layers(value: str | None):
    """CLI text -> None | int | 'all'."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return "all"
    try:
        return int(value)
    except ValueError as e:
        raise FitError(f"--fine-tune-layers: {value!r} is not a number or 'all'") from e


# ---------------------------------------------------------------------------------------------
# building and compiling


def build_model(config: FitConfig, *, num_classes: int = 0):
    """The model of `config`'s task and head (`trainer.tasks`; a detector by default), seeded,
    BatchNorm momentum lowered to the task's when training from scratch."""
    import keras

    task = tasks.get(config.task, config.head)
    keras.utils.set_random_seed(config.seed)
    model = task.build(config, num_classes=num_classes)
    if config.from_scratch:
        for layer in model.get_layer("backbone").layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = task.scratch_bn_momentum
    return model


def compile_for_phase(model, config: FitConfig, *, fine_tune_layers, lr: float) -> int:
    """Set what trains (BatchNorm frozen unless training from scratch) and compile with a fresh
    optimizer, the task's way. Returns trainable backbone layers."""
    from .models import set_trainable

    n = set_trainable(model, fine_tune_layers, freeze_batchnorm=not config.from_scratch)
    tasks.get(config.task, config.head).compile(model, lr=lr, config=config)
    return n


# ---------------------------------------------------------------------------------------------
# run state


def _state_path(run: Path) -> Path:
    return Path(run) / "state.json"


def read_state(run: Path) -> dict | None:
    p = _state_path(run)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FitError(f"{p}: not valid JSON ({e}); cannot resume") from e


def _write_state(run: Path, state: dict) -> None:
    write_json_atomic(_state_path(run), state)


def _trim_history(run: Path, before_epoch: int) -> None:
    """Drop history rows of epochs >= `before_epoch` (logged after the last resumable checkpoint)."""
    path = Path(run) / HISTORY
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < before_epoch]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    tmp.replace(path)


def read_history(run: Path) -> list[dict]:
    path = Path(run) / HISTORY
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


class _StateCallback:
    """Keeps `state.json` current after every epoch (best validation loss, epochs done)."""

    def __new__(cls, run, state, phase_index, monitor):
        import keras

        class StateCallback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                value = (logs or {}).get(monitor)
                if value is not None and value < state.get("best", float("inf")):
                    state["best"] = float(value)
                    state["best_epoch"] = int(epoch)
                state["phase"] = phase_index
                state["last_epoch"] = int(epoch)
                _write_state(run, state)

        return StateCallback()


# ---------------------------------------------------------------------------------------------
# the fit


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class _EpochOrder:
    """Sets the training pipeline's epoch (`trainer.data.epoch_variable`) as each epoch begins, so
    the pipeline shuffles for that epoch (Keras starts the epoch's iterator right after)."""

    def __new__(cls, epoch_variable):
        import keras

        class EpochOrder(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                epoch_variable.assign(int(epoch))

        return EpochOrder()


CALLBACK_STATE = "callbacks.json"


class _Backup:
    """`keras.callbacks.BackupAndRestore` that also backs up, beside the weights, optimizer and
    epoch, the attributes `keep` names: `{key: (callback, (attribute, ...))}` (e.g. early
    stopping's `wait` and `best`), which Keras' callbacks reset at the start of every `fit`, and
    the model's random state (dropout's), which Keras' weights files leave out.
    Put it after those callbacks: it then saves what they did in the epoch, and restores after
    they reset. Their state is saved first, tagged with its epoch, and used only when it belongs
    to the epoch the weights are from."""

    def __new__(cls, backup_dir, *, keep: dict):
        import keras
        import numpy as np

        path = Path(backup_dir) / CALLBACK_STATE

        class Backup(keras.callbacks.BackupAndRestore):
            def on_train_begin(self, logs=None):
                # Keras never resets the epoch a restore sets: a later phase on the same model
                # would start from it
                self.model._initial_epoch = None
                super().on_train_begin(logs)
                epoch = self.model._initial_epoch
                if epoch is None or not path.is_file():
                    return
                try:
                    saved = json.loads(path.read_text(encoding="utf-8"))
                except ValueError:
                    return
                if saved.get("epoch") != epoch:
                    return
                for key, (callback, names) in keep.items():
                    for name in names:
                        if name in saved.get(key, {}):
                            setattr(callback, name, saved[key][name])
                generators = _seed_generators(self.model)
                if len(saved.get("seed_generators", [])) == len(generators):
                    for generator, value in zip(generators, saved["seed_generators"]):
                        generator.state.assign(np.asarray(value, dtype=generator.state.dtype))

            def _save_model(self):
                Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
                state = {"epoch": self._current_epoch}
                for key, (callback, names) in keep.items():
                    state[key] = {name: _plain(getattr(callback, name, None)) for name in names}
                # dropout's random state: Keras' weights files leave it out
                state["seed_generators"] = [np.asarray(g.state.numpy()).tolist() for g in _seed_generators(self.model)]
                write_json_atomic(path, state)
                super()._save_model()

        return Backup(str(backup_dir), delete_checkpoint=True)


def _seed_generators(model) -> list:
    """The random-state holders (`keras.random.SeedGenerator`, e.g. a Dropout layer's) of `model`
    and every layer in it, in a fixed order."""
    return [g for layer in model._flatten_layers(include_self=True) for g in layer._seed_generators]


def _plain(value):
    """A callback attribute as JSON keeps it (numpy scalars become Python numbers)."""
    if hasattr(value, "item"):
        return value.item()
    return value


class _BestWeights:
    """`ModelCheckpoint` (best weights only) that always saves `target`, the full model, even while
    `fit` runs on the feature cache's model (which shares its trainable layers)."""

    def __new__(cls, target, path, **kwargs):
        import keras

        class BestWeights(keras.callbacks.ModelCheckpoint):
            def set_model(self, model):
                super().set_model(target)

        return BestWeights(path, save_best_only=True, save_weights_only=True, **kwargs)


def train_phase(model, train_ds, val_ds, *, run: Path, phase: dict, phase_index: int, initial_epoch: int,
                config: FitConfig, state: dict, verbose="auto", extra_callbacks=(), cache=None,
                epoch_variable=None):
    """One phase: compile for it and `model.fit` with the run's callbacks. Returns the next epoch.

    With `cache` (a `trainer.feature_cache.FeatureCache`) the frozen layers' activations are
    computed once and the trainable part is fitted on them; `model` is trained all the same (the
    parts share their layers) and is what the best-weights checkpoint saves. `epoch_variable`:
    the training pipeline's (`trainer.data.epoch_variable`), set as each epoch begins."""
    import keras

    run = Path(run)
    monitor = "val_loss" if val_ds is not None else "loss"
    # what trains: the model, or its training twin (same layers, e.g. without the dense head's NMS)
    trained = tasks.get(config.task, config.head).training_model(model)
    compile_for_phase(trained, config, fine_tune_layers=phase["fine_tune_layers"], lr=phase["lr"])
    fit_model, fit_train, fit_val = trained, train_ds, val_ds
    cached = (cache.prepare(trained, phase=phase["name"], fine_tune_layers=phase["fine_tune_layers"])
              if cache is not None else None)
    if cached is not None:
        fit_model, fit_train, fit_val = cached.model, cached.train, cached.val
    backup_dir = run / "checkpoint" / f"phase{phase_index}"
    best = _BestWeights(model, str(run / "best.weights.h5"), monitor=monitor,
                        initial_value_threshold=state.get("best"))
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, config.patience // 2),
                                                min_lr=phase["lr"] / 100)
    callbacks = [best, early, plateau, keras.callbacks.CSVLogger(str(run / HISTORY), append=True)]
    if _has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(run / "logs"), write_graph=False, profile_batch=0))
    if epoch_variable is not None:
        callbacks.insert(0, _EpochOrder(epoch_variable))
    callbacks += [
        _StateCallback(run, state, phase_index, monitor),
        # after the callbacks whose state it keeps (see _Backup)
        _Backup(backup_dir, keep={"best_weights": (best, ("best",)),
                                  "early_stopping": (early, ("wait", "best", "best_epoch", "stopped_epoch")),
                                  "learning_rate": (plateau, ("wait", "best", "cooldown_counter"))}),
        *extra_callbacks,
    ]
    meta = backup_dir / "training_metadata.json"
    if meta.is_file():
        try:
            _trim_history(run, int(json.loads(meta.read_text())["epoch"]))
        except (ValueError, KeyError):
            pass
    else:
        _trim_history(run, initial_epoch)
    if verbose == "auto":
        # a progress bar on a terminal; one line per epoch in a log (`make demo > log`), where
        # Keras would otherwise print a line per step
        verbose = 1 if sys.stdout.isatty() else 2
    with warnings.catch_warnings(), keras_multiworker(fit_model):
        # The record pipeline has no declared length (the batch order depends on that), so Keras
        # learns the epoch's end by running out of data and warns about it: expected, not a problem.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = fit_model.fit(fit_train, validation_data=fit_val, epochs=initial_epoch + phase["epochs"],
                                initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                                shuffle=False)  # tf.data shuffles, seeded (see trainer.data)
    return (history.epoch[-1] + 1) if history.epoch else initial_epoch


def fit(tfdir: Path, out: Path, *, config: FitConfig, overwrite: bool = False, resume: bool = False,
        strategy: str = "none", verbose="auto", extra_callbacks=(), log=print) -> dict:
    """Train the model of TFDIR's task (`config.head` picks among its heads) on its train split
    (val for checkpoints) into the run folder `out`.

    `resume` continues an interrupted fit of `out` with its saved configuration (the `config`
    passed is then ignored) after checking TFDIR's records are the ones it started with.
    `strategy`: `trainer.distribute.STRATEGIES` (`none`: one device). On a worker other than the
    chief, `out` is only read (to resume) and the fit writes into a temporary folder, removed at
    the end. Returns the final `config.json` contents, plus `worker`: `{"index", "chief"}`.
    """
    from . import distribute

    tfdir, run = Path(tfdir), Path(out)
    if not resume:
        config.validate()
    # first: a multi-worker strategy must set TensorFlow's runtime up before anything else uses it
    dist = distribute.make_strategy(strategy, log=log)
    scratch = None
    if not dist.chief:
        scratch = Path(tempfile.mkdtemp(prefix=f"facekit-worker{dist.worker}-"))
        if resume:
            if not (run / "config.json").is_file():
                raise FitError(f"{run}: worker {dist.worker} cannot read the chief's run folder to resume it "
                               f"(a resumed multi-worker fit needs RUN on a file system every worker sees)")
            shutil.copytree(run, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("logs", "feature_cache"))
        run, overwrite = scratch, True
    try:
        record = _fit(tfdir, run, config=config, overwrite=overwrite, resume=resume, dist=dist, verbose=verbose,
                      extra_callbacks=extra_callbacks, log=log)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {**record, "worker": {"index": dist.worker, "chief": dist.chief}}


def _fit(tfdir: Path, run: Path, *, config: FitConfig, overwrite: bool, resume: bool, dist, verbose,
         extra_callbacks, log) -> dict:
    import keras  # noqa: F401  (versions() records it)

    if resume:
        saved, state = _load_for_resume(run)
        config = FitConfig(**saved["fit"])
    else:
        state = None
    data_info = tdata.describe_tfdir(tfdir)
    if config.task is not None and config.task != data_info["task"]:
        raise FitError(f"--task {config.task}: {tfdir} holds {data_info['task']} records")
    # a resumed run keeps its entry (one from before heads had names: its task's first head)
    task = tasks.of_run(saved, run) if resume else tasks.get(data_info["task"], config.head)
    num_classes = task.num_classes(data_info, tfdir)
    if data_info["counts"].get("train", 0) == 0:
        raise FitError(f"{tfdir}: the train split is empty")
    config = dataclasses.replace(config, task=task.name, head=task.head)

    if not resume and (run / "config.json").exists() and not overwrite:
        raise OutputExistsError(f"{run}: a run already exists (use --overwrite to replace it, "
                                f"or --resume to continue it)")
    if not resume:
        prepare_output_dir(run, overwrite=overwrite)  # refuses a non-empty folder before any work
    # built before anything is written, so a failed weights download leaves no half-made run
    with dist.strategy.scope():
        model = build_model(config, num_classes=num_classes)
    if resume:
        if saved["data"]["record_sha256"] != data_info["record_sha256"]:
            raise FitError(f"{tfdir}: TFRecords differ from those {run} started with "
                           f"(record hash {data_info['record_sha256'][:12]} != {saved['data']['record_sha256'][:12]})")
        record = saved
        log(f"resuming {run} (phase {state.get('phase', 0) + 1}, after epoch {state.get('last_epoch', -1) + 1})")
    else:
        if overwrite:
            for name in ("checkpoint", "logs"):
                shutil.rmtree(run / name, ignore_errors=True)
            for name in (HISTORY, "state.json", "best.weights.h5", "model.keras", "curves.png", "metrics.json"):
                (run / name).unlink(missing_ok=True)
        state = {"phase": 0, "phases_done": 0, "next_epoch": 0}
        _write_state(run, state)
        record = {"facekit_run": 1, "status": "running", "command": command_line(), "task": task.name,
                  "head": task.head, "backbone": config.backbone, "image_size": config.image_size, "alpha": config.alpha,
                  "weights": config.weights, "labels": data_info["labels"],
                  "fit": dataclasses.asdict(config), "phases": config.phases(),
                  "data": data_info, "outputs": dict(task.outputs),
                  "input": {"size": [config.image_size, config.image_size, 3], "range": "RGB 0-255"}}
    record["distribute"] = dist.describe()  # how this (last) part of the fit ran
    write_json_atomic(run / "config.json", record)

    targets = task.targets(model, num_classes)
    epoch_variable = tdata.epoch_variable(state.get("next_epoch", 0))
    shard = None
    if dist.workers > 1:
        shard = (dist.workers, dist.worker)
        for split in ("train", "val") if data_info["counts"].get("val") else ("train",):
            if tdata.sharding(tfdir, split, dist.workers) == "record":
                log(f"{split}: {len(tdata.shards(tfdir, split))} shard file(s) for {dist.workers} workers: every "
                    f"worker reads all of them and keeps its share of the records (write at least {dist.workers} "
                    f"shards, `datatool split --shards {dist.workers}`, to give each worker files of its own)")
    train_ds = tdata.make_dataset(tfdir, "train", image_size=config.image_size, batch_size=config.batch_size,
                                  targets=targets, shuffle=True, seed=config.seed, epoch=epoch_variable, shard=shard)
    val_ds = (tdata.make_dataset(tfdir, "val", image_size=config.image_size, batch_size=config.batch_size,
                                 targets=targets, shard=shard) if data_info["counts"].get("val") else None)
    if val_ds is None:
        log(f"{tfdir}: no val split: checkpoints and early stopping follow the training loss")
    if not _has_tensorboard():
        log("TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
    cache = _feature_cache(tfdir, run, config=config, data_info=data_info, targets=targets,
                           num_classes=num_classes, record=record, log=log, progress=verbose != 0,
                           epoch_variable=epoch_variable, dist=dist)

    phases = config.phases()
    epoch = state.get("next_epoch", 0)
    done = state.get("phases_done", 0)
    try:
        with dist.strategy.scope():
            if done:  # resuming after a finished phase: start from its weights
                model.load_weights(str(run / "checkpoint" / f"after_phase{done - 1}.weights.h5"))
            for k, phase in enumerate(phases):
                weights_after = run / "checkpoint" / f"after_phase{k}.weights.h5"
                if k < done:
                    continue
                log(f"phase {k + 1}/{len(phases)} '{phase['name']}': backbone layers trained: "
                    f"{phase['fine_tune_layers']}, lr {phase['lr']:g}, epochs {phase['epochs']}")
                epoch = train_phase(model, train_ds, val_ds, run=run, phase=phase, phase_index=k, initial_epoch=epoch,
                                    config=config, state=state, verbose=verbose, extra_callbacks=extra_callbacks,
                                    cache=cache, epoch_variable=epoch_variable)
                model.save_weights(str(weights_after))
                state.update(phases_done=k + 1, next_epoch=epoch)
                state.setdefault("phase_ends", []).append(epoch)
                _write_state(run, state)
                if cache is not None:
                    write_json_atomic(run / "config.json", record)  # with the phase's feature_cache entry
    except Exception as e:
        import tensorflow as tf

        if isinstance(e, tf.errors.OpError):
            raise FitError(f"{tfdir}: reading the TFRecords failed ({e.message.splitlines()[0]}); "
                           f"check them with `datatool inspect`") from e
        raise

    from .models import save_model

    best = run / "best.weights.h5"
    with dist.strategy.scope():
        if best.is_file():
            with warnings.catch_warnings():
                # the best weights are reloaded for saving only: the optimizer state is not needed
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(str(best))
        save_model(model, run / "model.keras")
    history = read_history(run)
    try:
        plot_curves(history, run / "curves.png", phase_ends=state.get("phase_ends", []), panels=task.panels)
    except Exception as e:  # a picture must not lose a finished fit
        log(f"curves.png not written ({e})")
    record.update(status="done", versions=versions(), results={
        "epochs": epoch, "best_epoch": state.get("best_epoch"), "best_" + ("val_loss" if val_ds else "loss"): state.get("best"),
        "final": history[-1] if history else None, "phase_ends": state.get("phase_ends", [])})
    write_json_atomic(run / "config.json", record)
    state["done"] = True
    _write_state(run, state)
    shutil.rmtree(run / "checkpoint", ignore_errors=True)
    return record


def _feature_cache(tfdir: Path, run: Path, *, config: FitConfig, data_info: dict, targets, num_classes: int,
                   record: dict, log, progress: bool, epoch_variable=0, dist=None):
    """The fit's `FeatureCache` (None with `feature_cache` off, or under a strategy other than
    `none`); its entries go to `record`."""
    if not config.feature_cache:
        log("feature cache off (--no-feature-cache): the frozen layers run on every batch")
        return None
    if dist is not None and dist.name != "none":
        # the cache's batches come from one process's arrays: they are not shared out by file
        # among workers, and its extractor runs outside the strategy
        log(f"feature cache off under --strategy {dist.name}: the frozen layers run on every batch, "
            f"on every replica (--strategy none uses the cache)")
        return None
    import keras
    import tensorflow as tf

    from . import __version__
    from .feature_cache import FeatureCache

    splits = [s for s in ("train", "val") if data_info["counts"].get(s)]
    pipelines = {s: (lambda s=s: tdata.make_dataset(tfdir, s, image_size=config.image_size,
                                                    batch_size=config.batch_size, targets=targets)) for s in splits}
    fingerprint = {"records": data_info["record_sha256"], "task": config.task, "head": config.head,
                   "num_classes": num_classes, "backbone": config.backbone,
                   "alpha": config.alpha, "image_size": config.image_size, "trainer": __version__,
                   "keras": keras.__version__, "tensorflow": tf.__version__}
    return FeatureCache(run, pipelines=pipelines, counts={s: data_info["counts"][s] for s in splits},
                        fingerprint=fingerprint, batch_size=config.batch_size, seed=config.seed,
                        epoch=epoch_variable,
                        ram_fraction=config.feature_cache_ram, log=log, progress=progress,
                        entries=record.setdefault("feature_cache", []))


def _load_for_resume(run: Path):
    if not (run / "config.json").is_file():
        raise FitError(f"{run}: nothing to resume (no config.json; start the fit without --resume)")
    state = read_state(run)
    if state is None:
        raise FitError(f"{run}: nothing to resume (no state.json)")
    if state.get("done"):
        raise FitError(f"{run}: this fit already finished (use --overwrite to train it again)")
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    return saved, state


# ---------------------------------------------------------------------------------------------
# the picture


def plot_curves(history: list[dict], path: Path, *, panels, phase_ends=()) -> None:
    """Losses and metrics per epoch (train solid, validation dashed), phase changes marked.
    `panels`: `[(history key, title)]`, the task's (`trainer.tasks.Task.panels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datatool.core.fsutil import atomic_path

    epochs = [int(h["epoch"]) + 1 for h in history]
    rows, cols = (2, 3) if len(panels) > 3 else (1, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 7 if rows == 2 else 4), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            ys = [h.get(prefix + key) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, [float("nan") if y is None else y for y in ys], style, marker="o", ms=3,
                        label="validation" if prefix else "train")
        for end in list(phase_ends)[:-1]:
            ax.axvline(end + 0.5, color="gray", lw=0.8, ls=":")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("trainer fit (dotted line: fine-tuning starts)" if len(phase_ends) > 1 else "trainer fit")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)

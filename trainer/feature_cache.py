"""Frozen-backbone activations computed once per image, so the frozen part is not recomputed
every epoch (augmentation happens offline in `datatool augment`; `trainer.data` feeds fixed
images, so a frozen layer's output for a record never changes between epochs).

A model built for any task of `trainer.tasks` is `image -> preprocess -> backbone ->
head -> outputs`. For one training phase the backbone is cut in two at a *boundary*:

- the frozen bottom (`preprocess` + backbone layers below the boundary): run once over the
  train and val records by the *extractor*, its outputs stored in memory or on disk;
- the trainable top (backbone layers above the boundary, then the head and the named outputs):
  the *cached model*, trained on the stored activations. It shares its layers (the same Keras
  layer objects, hence the same weights) with the full model, so training it trains the full
  model: the saved `model.keras` is the model you would get without the cache.

Where the boundary goes: heads-only phase, the backbone's output; `fine_tune_layers=N`, below the
top N layers. MobileNetV2's inverted-residual blocks end in an `add` that also takes the block's
input, so not every layer's output alone feeds what is above it. The boundary is the nearest
layer at or below the N-th from the top whose output is the only tensor crossing the cut; the
layers between it and the top N run in the cached model but stay frozen (VGG16 is a chain:
every layer is a boundary).

A backbone may have several outputs (`trainer.dense`: the stride-8 and stride-16 maps). Then
several tensors cross the cut: an output of the backbone that lies below it is cached too and
goes straight to the head. Heads only: every output is cached; fine-tuning the top N layers: the
boundary layer's output plus the outputs below it. The cached model then takes a list of
activations, in the order of the layers that make them.

Order: the cached batches are drawn with the same shuffle (`trainer.data.shuffle_records`: same
block, seed and epoch) as `trainer.data.make_dataset(shuffle=True)`, over records stored in the
unshuffled order, so they hold the same records in the same order, epoch after epoch.

Storage: estimated up front (records x activation size x 4 bytes). In memory when that fits in
a share of the available RAM (`ram_fraction`, default 25%); otherwise on disk under
`RUN/feature_cache/KEY/` as `.npy` files read through a memory map. A disk cache is reused only
when its key matches: the TFRecords' content hash, backbone, alpha, image size, a hash of the
frozen weights, the boundary, the task and the record counts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from datatool.core.errors import DatatoolError

from .data import shuffle_records  # replayed over the stored batches (see the module docstring)

FORMAT = 1
CACHE_DIR = "feature_cache"
DEFAULT_RAM_FRACTION = 0.25
_TARGETS_KEY = "__targets__"


class FeatureCacheError(DatatoolError):
    """A feature cache that cannot be built or read."""


# ---------------------------------------------------------------------------------------------
# where to cut the backbone


@dataclass(frozen=True)
class Boundary:
    """Where a backbone is cut. `cut`: index in `backbone.layers` of the first layer of the top
    part (`len(layers)`: no top part, the backbone's output is cached). `layer`: name of the last
    frozen layer, whose output is cached. `shape`: one image's activations there. `requested`:
    backbone layers asked to train; `top_layers`: layers in the top part (>= requested, the extra
    ones are frozen but run in the cached model). `tensors`, `shapes`: every cached tensor (the
    layers making them, in layer order) and its shape: `(layer,)` and `(shape,)` for a backbone
    with one output; with several, also the outputs below the cut."""

    cut: int
    layer: str
    shape: tuple
    requested: int
    top_layers: int
    tensors: tuple = ()
    shapes: tuple = ()

    def __post_init__(self):
        if not self.tensors:
            object.__setattr__(self, "tensors", (self.layer,))
            object.__setattr__(self, "shapes", (tuple(self.shape),))

    @property
    def multiple(self) -> bool:
        """More than one tensor crosses the cut (the cached model takes a list)."""
        return len(self.tensors) > 1


def _graph_edges(functional) -> list[tuple[int, int]]:
    """`(producer index, consumer index)` in `functional.layers` for every connection."""
    index = {id(layer): k for k, layer in enumerate(functional.layers)}
    edges = []
    for nodes in functional._nodes_by_depth.values():  # Keras 3 Functional internals
        for node in nodes:
            consumer = index.get(id(node.operation))
            if consumer is None:
                continue
            for tensor in node.input_tensors:
                producer = index.get(id(tensor._keras_history.operation))
                if producer is not None:
                    edges.append((producer, consumer))
    return edges


def _output_indices(functional) -> list[int]:
    """Indices in `functional.layers` of the layers making its outputs, in output order."""
    index = {id(layer): k for k, layer in enumerate(functional.layers)}
    return [index[id(t._keras_history.operation)] for t in functional.outputs]


def valid_cuts(backbone) -> list[int]:
    """Cut indices `c` (the top part is `backbone.layers[c:]`) at which the output of
    `layers[c - 1]` is the only tensor going from below the cut to a layer above it (outputs of
    the backbone below the cut aside: they are cached as they are)."""
    n = len(backbone.layers)
    ok = [True] * (n + 1)
    ok[0] = False
    for producer, consumer in _graph_edges(backbone):
        # an edge skipping over layers makes every cut it crosses, other than right after its
        # producer, invalid
        for c in range(producer + 2, consumer + 1):
            ok[c] = False
    return [c for c in range(1, n + 1) if ok[c]]


def find_boundary(backbone, fine_tune_layers: int) -> Boundary | None:
    """The boundary for training the top `fine_tune_layers` Keras layers of `backbone` (0: the
    head only). None when nothing below them could be frozen."""
    layers = backbone.layers
    n = len(layers)
    want = max(0, min(int(fine_tune_layers), n))
    cuts = [c for c in valid_cuts(backbone) if c <= n - want]
    # a cut after the input layer alone would cache the preprocessed image: nothing to save
    if not cuts or cuts[-1] <= 1:
        return None
    c = cuts[-1]

    def shape_of(k):
        return tuple(int(d) for d in layers[k].output.shape[1:])

    cached = sorted({c - 1} | {k for k in _output_indices(backbone) if k < c})
    if c < n and not any(p == c - 1 and q >= c for p, q in _graph_edges(backbone)):
        cached.remove(c - 1)  # feeds nothing above (only an output of the backbone would)
    return Boundary(cut=c, layer=layers[c - 1].name, shape=shape_of(c - 1), requested=want, top_layers=n - c,
                    tensors=tuple(layers[k].name for k in cached), shapes=tuple(shape_of(k) for k in cached))


# ---------------------------------------------------------------------------------------------
# the two models


@dataclass
class SplitModel:
    """`extractor`: image (0-255) -> cached activations; `cached_model`: activations -> the full
    model's outputs (same names), sharing the full model's layers."""

    extractor: object
    cached_model: object
    boundary: Boundary


def _backbone_node(model):
    bb = model.get_layer("backbone")
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.operation is bb:
                return bb, node
    raise FeatureCacheError(f"model {model.name!r}: its 'backbone' layer is not called in its graph")


def split_model(model, boundary: Boundary) -> SplitModel:
    """Cut `model` (`image -> preprocess -> backbone -> head -> outputs`) at `boundary`."""
    import keras

    bb, node = _backbone_node(model)
    training = node.arguments.kwargs.get("training")  # False: backbone BatchNorm in inference mode
    before = keras.Model(model.inputs, node.input_tensors[0], name="before_backbone")
    outputs = list(node.output_tensors)
    after = keras.Model(outputs if len(outputs) > 1 else outputs[0], model.output, name="after_backbone")
    layers = bb.layers
    cached_tensors = [bb.get_layer(name).output for name in boundary.tensors]
    bottom = keras.Model(bb.inputs, cached_tensors if boundary.multiple else cached_tensors[0],
                         name="backbone_bottom")
    # the backbone's outputs above the cut come out of the top part, the others are cached
    above = [k for k, out_index in enumerate(_output_indices(bb)) if out_index >= boundary.cut]
    top = None
    if above:
        feeding = boundary.tensors.index(layers[boundary.cut - 1].name)
        top = keras.Model(cached_tensors[feeding], [bb.outputs[k] for k in above], name="backbone_top")

    image = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    # the bottom is frozen: in inference mode whatever the phase (frozen BatchNorm uses its
    # moving statistics in Keras 3 either way)
    extractor = keras.Model(image, bottom(before(image), training=False), name="feature_extractor")

    if boundary.multiple:
        feats = [keras.Input(shape, name=f"features{k}") for k, shape in enumerate(boundary.shapes)]
    else:
        feats = [keras.Input(boundary.shape, name="features")]
    x = []
    top_out = iter(top(feats[feeding], training=training) if top is not None else [])
    for out_index in _output_indices(bb):
        if out_index >= boundary.cut:
            x.append(next(top_out))
        else:
            x.append(feats[boundary.tensors.index(layers[out_index].name)])
    out = after(x if len(x) > 1 else x[0])
    if isinstance(out, dict):  # named like the full model's outputs, so losses and metrics map
        out = {k: keras.layers.Identity(name=k)(v) for k, v in out.items()}
    cached = keras.Model(feats if boundary.multiple else feats[0], out, name="cached_" + model.name)
    return SplitModel(extractor=extractor, cached_model=cached, boundary=boundary)


def compile_like(cached_model, model) -> None:
    """Compile `cached_model` as `model` is compiled (fresh optimizer, same losses and metrics)."""
    config = model.get_compile_config()
    if not config:
        raise FeatureCacheError(f"model {model.name!r} is not compiled")
    cached_model.compile_from_config(config)


# ---------------------------------------------------------------------------------------------
# sizes, keys


def available_memory() -> int:
    """Bytes of RAM available now (MemAvailable on Linux; free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def estimate_bytes(shape, images: int) -> int:
    """Size of `images` float32 activations of `shape` (or of several shapes: a list of tuples)."""
    if shape and not isinstance(shape[0], int):
        return sum(estimate_bytes(s, images) for s in shape)
    return int(images) * math.prod(shape) * 4


def weights_sha256(model) -> str:
    """sha256 over a model's weights (shapes and values, in order)."""
    import numpy as np

    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------
# stored activations


@dataclass
class CachedSplit:
    """One split's activations `(n, *shape)` float32 (an array, or a memory map of a `.npy`; a
    tuple of them where several tensors cross the cut) and its targets, as the data pipeline gave
    them (a dict of `(n, ...)` arrays, or one array)."""

    features: object
    targets: object

    def __len__(self) -> int:
        return len(self.features[0] if isinstance(self.features, tuple) else self.features)

    def dataset(self, *, batch_size: int, order=None):
        """Batches of `(activations, targets)` in `order` (a dataset of row indices, e.g.
        `shuffled_order`; default: as stored). Activations: a tensor, or a tuple of tensors."""
        import numpy as np
        import tensorflow as tf

        several = isinstance(self.features, tuple)
        arrays = self.features if several else (self.features,)
        shapes = [tuple(a.shape[1:]) for a in arrays]
        targets = tf.nest.map_structure(tf.constant, self.targets)  # small: kept as tensors
        ds = order if order is not None else tf.data.Dataset.range(len(self))
        # of unknown length, like the TFRecord pipeline: Keras then handles the epochs of either alike
        ds = ds.filter(lambda i: True).batch(batch_size)

        def read(idx):
            return [np.asarray(a[idx], dtype=np.float32) for a in arrays]

        def load(idx):
            xs = tf.numpy_function(read, [idx], [tf.float32] * len(arrays), stateful=False)
            xs = tuple(tf.ensure_shape(x, (None, *shape)) for x, shape in zip(xs, shapes))
            return (xs if several else xs[0]), tf.nest.map_structure(lambda t: tf.gather(t, idx), targets)

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def shuffled_order(n: int, *, seed: int, epoch=0):
    """Row indices in the order `trainer.data.make_dataset(shuffle=True, seed=seed, epoch=epoch)`
    gives `n` records (`epoch`: an int, or the fit's `trainer.data.epoch_variable`, read as each
    epoch starts)."""
    import tensorflow as tf

    return shuffle_records(tf.data.Dataset.range(n), seed=seed, epoch=epoch)


def feature_function(extractor):
    """`extractor` in inference mode as one traced function for any batch size."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *extractor.inputs[0].shape[1:]), tf.float32)
    return tf.function(lambda x: extractor(x, training=False), input_signature=[spec])


def compute_features(run, dataset, out, *, desc: str = "features", progress: bool = True):
    """Run `run` (`feature_function(extractor)`) over `dataset` (unshuffled batches of `(images,
    targets)`), writing the activations into `out` (an array of `(n, *shape)`, or a tuple of them
    for an extractor with several outputs) in order. Returns the targets (the pipeline's
    structure, arrays concatenated). A progress bar on stderr."""
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    outs = out if isinstance(out, tuple) else (out,)
    n = len(outs[0])
    pos = 0
    parts = []
    with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False) as bar:
        for batch in dataset:
            images, targets = batch[0], batch[1]
            result = run(tf.cast(images, tf.float32))
            feats = [t.numpy() for t in (result if isinstance(result, (list, tuple)) else [result])]
            if len(feats) != len(outs):
                raise FeatureCacheError(f"{desc}: the extractor gives {len(feats)} tensors, {len(outs)} expected")
            if pos + len(feats[0]) > n:
                raise FeatureCacheError(f"{desc}: more records than the {n} counted (did the TFRecords change?)")
            for array, f in zip(outs, feats):
                array[pos:pos + len(f)] = f
            feats = feats[0]
            parts.append(tf.nest.map_structure(lambda t: t.numpy(), targets))
            pos += len(feats)
            bar.update(len(feats))
    if pos != n:
        raise FeatureCacheError(f"{desc}: {pos} records read, {n} counted (did the TFRecords change?)")
    return tf.nest.map_structure(lambda *xs: np.concatenate(xs), *parts)


def _feature_files(split: str, boundary: Boundary) -> list[str]:
    """The `.npy` file of each cached tensor of a split (one: `train.features.npy`; several:
    `train.features-0.npy`, `train.features-1.npy` ...)."""
    if not boundary.multiple:
        return [f"{split}.features.npy"]
    return [f"{split}.features-{k}.npy" for k in range(len(boundary.tensors))]


def _save_targets(path: Path, targets) -> None:
    import numpy as np

    arrays = targets if isinstance(targets, dict) else {_TARGETS_KEY: targets}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_targets(path: Path):
    import numpy as np

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays[_TARGETS_KEY] if list(arrays) == [_TARGETS_KEY] else arrays


# ---------------------------------------------------------------------------------------------
# one fit's cache


@dataclass
class CachedPhase:
    """What a phase trains on instead of images: the cached model and its datasets."""

    model: object
    train: object
    val: object | None
    info: dict = field(default_factory=dict)


class FeatureCache:
    """The feature cache of one fit: for each phase, decide where to cut and where to store,
    compute the activations (or reuse a matching disk cache) and build the cached datasets.

    `pipelines`: `{split: () -> unshuffled batched dataset of (images, targets)}` for the splits
    to cache (train, and val when there is one); `counts`: records per split; `fingerprint`: what
    identifies the data and the model besides the weights (record hash, backbone, alpha, image
    size, task ...). `entries` (a list, e.g. the run record's) gets one dict per prepared phase.
    """

    def __init__(self, run: Path, *, pipelines: dict, counts: dict, fingerprint: dict, batch_size: int,
                 seed: int = 0, epoch=0, ram_fraction: float = DEFAULT_RAM_FRACTION, log=print,
                 progress: bool = True, entries: list | None = None):
        self.root = Path(run) / CACHE_DIR
        self.pipelines = dict(pipelines)
        self.counts = {s: int(counts[s]) for s in self.pipelines}
        self.fingerprint = dict(fingerprint)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.ram_fraction = float(ram_fraction)
        self.log = log
        self.progress = progress
        self.entries = entries if entries is not None else []
        self._order = None
        if self.root.is_dir():  # leftovers of an interrupted feature pass
            for tmp in self.root.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def prepare(self, model, *, phase: str, fine_tune_layers) -> CachedPhase | None:
        """The cached model and datasets for a phase training the top `fine_tune_layers` backbone
        layers (0: head only; 'all': no cache), or None (said in the log) where it cannot apply.
        `model` must already be set up (trainable layers) and compiled for the phase."""
        if fine_tune_layers == "all":
            self.log(f"feature cache: not used in phase '{phase}': every backbone layer trains, nothing is frozen")
            return None
        bb = model.get_layer("backbone")
        boundary = find_boundary(bb, int(fine_tune_layers))
        if boundary is None:
            self.log(f"feature cache: not used in phase '{phase}': training the top {fine_tune_layers} of "
                     f"{len(bb.layers)} backbone layers leaves nothing frozen")
            return None
        split = split_model(model, boundary)
        compile_like(split.cached_model, model)

        images = sum(self.counts.values())
        size = estimate_bytes(list(boundary.shapes), images)
        budget = int(self.ram_fraction * available_memory())
        weights = weights_sha256(split.extractor)
        key = cache_key({"format": FORMAT, **self.fingerprint, "weights_sha256": weights,
                         "boundary": boundary.layer, "cut": boundary.cut, "shape": list(boundary.shape),
                         "tensors": list(boundary.tensors), "counts": self.counts})
        where = self.root / key[:16]
        info = {"phase": phase, "boundary": boundary.layer, "requested_layers": boundary.requested,
                "top_layers": boundary.top_layers, "shape": list(boundary.shape), "images": images,
                "bytes": size, "key": key}
        if boundary.multiple:
            info.update(tensors=list(boundary.tensors), shapes=[list(s) for s in boundary.shapes])
        self._say_boundary(phase, boundary, bb)

        t0 = time.perf_counter()
        stored = self._open(where, key, boundary, in_memory=size <= budget)
        if stored is not None:
            mode, reused = ("memory" if size <= budget else "disk"), True
            self.log(f"feature cache: reusing {where} ({human_bytes(size)}, key {key[:12]})")
        elif size <= budget:
            mode, reused = "memory", False
            self.log(f"feature cache: {images} images x {' + '.join('x'.join(map(str, s)) for s in boundary.shapes)} "
                     f"activations = "
                     f"{human_bytes(size)}, in memory (budget {human_bytes(budget)} = "
                     f"{self.ram_fraction:.0%} of available RAM); computing them once")
            stored = self._compute(split.extractor, boundary, into=None)
        else:
            free = shutil.disk_usage(self._existing_parent(where)).free
            if size > 0.9 * free:
                self.log(f"feature cache: not used in phase '{phase}': {human_bytes(size)} of activations fit "
                         f"neither in memory (budget {human_bytes(budget)}) nor on disk ({human_bytes(free)} free)")
                return None
            mode, reused = "disk", False
            self.log(f"feature cache: {human_bytes(size)} of activations is over the memory budget "
                     f"({human_bytes(budget)} = {self.ram_fraction:.0%} of available RAM): on disk in {where}; "
                     f"computing them once")
            stored = self._compute(split.extractor, boundary, into=where, key=key, phase=phase)
        info.update(mode=mode, reused=reused, compute_s=round(time.perf_counter() - t0, 3),
                    path=str(where) if mode == "disk" or reused else None)
        self.entries.append(info)
        if self._order is None:
            self._order = shuffled_order(self.counts["train"], seed=self.seed, epoch=self.epoch)
        train = stored["train"].dataset(batch_size=self.batch_size, order=self._order)
        val = stored["val"].dataset(batch_size=self.batch_size) if "val" in stored else None
        return CachedPhase(model=split.cached_model, train=train, val=val, info=info)

    def _say_boundary(self, phase: str, b: Boundary, bb) -> None:
        taps = [t for t in b.tensors if t != b.layer]
        also = f", and the backbone's output{'s' if len(taps) > 1 else ''} below it ({', '.join(taps)})" if taps else ""
        if b.requested == 0:
            outputs = ", ".join(b.tensors)
            self.log(f"feature cache (phase '{phase}'): caching the backbone's output{'s' if b.multiple else ''} "
                     f"({outputs})")
        elif b.top_layers == b.requested:
            self.log(f"feature cache (phase '{phase}'): caching the output of '{b.layer}', below the top "
                     f"{b.requested} backbone layers{also}")
        else:
            self.log(f"feature cache (phase '{phase}'): --fine-tune-layers {b.requested}: caching the output of "
                     f"'{b.layer}', {b.top_layers} layers from the top of the backbone: the nearest layer at or "
                     f"below the top {b.requested} whose output alone feeds everything above (a residual 'add' "
                     f"crosses the cuts in between); the {b.top_layers - b.requested} layers between stay "
                     f"frozen{also}")

    @staticmethod
    def _existing_parent(path: Path) -> Path:
        while not path.exists():
            path = path.parent
        return path

    def _open(self, where: Path, key: str, boundary: Boundary, *, in_memory: bool) -> dict | None:
        """A matching disk cache at `where`, or None (stale or damaged ones are removed)."""
        import numpy as np

        meta_path = where / "cache.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("key") != key:
                raise ValueError("key differs")
            stored = {}
            for split, n in self.counts.items():
                arrays = []
                for name, shape in zip(_feature_files(split, boundary), boundary.shapes):
                    feats = np.load(where / name, mmap_mode="r")
                    if feats.shape != (n, *shape):
                        raise ValueError(f"{name}: shape {feats.shape}, expected {(n, *shape)}")
                    arrays.append(np.array(feats) if in_memory else feats)
                stored[split] = CachedSplit(features=tuple(arrays) if boundary.multiple else arrays[0],
                                            targets=_load_targets(where / f"{split}.targets.npz"))
            return stored
        except (OSError, ValueError, KeyError) as e:
            self.log(f"feature cache: {where} unusable ({e}); recomputing")
            shutil.rmtree(where, ignore_errors=True)
            return None

    def _compute(self, extractor, boundary: Boundary, *, into: Path | None, key: str = "", phase: str = "") -> dict:
        import numpy as np

        run = feature_function(extractor)
        if into is None:
            stored = {}
            for split, n in self.counts.items():
                feats = tuple(np.empty((n, *shape), np.float32) for shape in boundary.shapes)
                feats = feats if boundary.multiple else feats[0]
                targets = compute_features(run, self.pipelines[split](), feats, desc=f"features ({split})",
                                           progress=self.progress)
                stored[split] = CachedSplit(features=feats, targets=targets)
            return stored

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key[:16]}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for split, n in self.counts.items():
                feats = tuple(np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.float32, shape=(n, *shape))
                              for name, shape in zip(_feature_files(split, boundary), boundary.shapes))
                targets = compute_features(run, self.pipelines[split](), feats if boundary.multiple else feats[0],
                                           desc=f"features ({split})", progress=self.progress)
                for array in feats:
                    array.flush()
                del feats
                _save_targets(tmp / f"{split}.targets.npz", targets)
            meta = {"facekit_feature_cache": FORMAT, "key": key, "phase": phase, "boundary": boundary.layer,
                    "shape": list(boundary.shape), "tensors": list(boundary.tensors), "counts": self.counts,
                    **self.fingerprint}
            (tmp / "cache.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            # an older cache of the same phase (other data or weights) is stale now
            for old in self.root.iterdir():
                if old.is_dir() and not old.name.startswith(".") and old.name != into.name:
                    try:
                        if json.loads((old / "cache.json").read_text()).get("phase") == phase:
                            shutil.rmtree(old, ignore_errors=True)
                    except (OSError, ValueError):
                        shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(into, ignore_errors=True)
            os.replace(tmp, into)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._open(into, key, boundary, in_memory=False)

"""`trainer fit --strategy`: which `tf.distribute` strategy a fit runs under, and who writes the run.

- `none`: TensorFlow's default strategy (one device: the first GPU, else the CPU);
- `mirrored`: `MirroredStrategy`, one replica per local GPU (the CPU when there is none);
- `multiworker`: `MultiWorkerMirroredStrategy`, one process per machine, the cluster and this
  process's place in it read from the `TF_CONFIG` environment variable;
- `auto`: `mirrored` when this machine has more than one GPU, else `none`.

`--batch-size` is the global batch: the strategy splits each batch over the replicas, so a fit
sees the same batches whatever the number of devices.

Only the chief (the `chief` task, else worker 0) writes the run folder. The other workers run
the same steps (every worker must take part in every collective, saving included) but write into
a temporary folder of their own, removed at the end: Keras' multi-worker pattern. A resumed
multi-worker fit reads the chief's run folder on every worker, so it needs a folder that every
machine sees (a shared file system); a fresh one does not.

This module creates the strategy and nothing else; the fit builds and compiles the model inside
`strategy.scope()` and feeds each worker its share of the input (`trainer.data.make_dataset(shard=...)`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from datatool.core.errors import DatatoolError

STRATEGIES = ("auto", "none", "mirrored", "multiworker")


class DistributeError(DatatoolError):
    """A strategy that cannot be set up (an unknown name, a missing or broken TF_CONFIG)."""


@dataclass(frozen=True)
class Distribution:
    """The strategy a fit runs under. `name`: what `--strategy` resolved to (`none`, `mirrored`,
    `multiworker`); `workers`: processes taking part; `worker`: this one's index among them (0 on
    one machine); `chief`: whether this process writes the run folder."""

    name: str
    strategy: object
    replicas: int
    workers: int = 1
    worker: int = 0
    chief: bool = True

    def describe(self) -> dict:
        """The `distribute` entry of a run's `config.json`."""
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers}


def read_tf_config(environ=None) -> dict:
    """`TF_CONFIG` parsed and checked: `{"cluster": {"worker": [...], ...}, "task": {"type", "index"}}`."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        raise DistributeError("--strategy multiworker: TF_CONFIG is not set; set it on every machine to a JSON "
                              "naming the cluster and this machine's task, e.g. "
                              '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise DistributeError(f"TF_CONFIG: not valid JSON ({e})") from e
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise DistributeError("TF_CONFIG: cluster: expected an object with a 'worker' list of host:port")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise DistributeError(f"TF_CONFIG: task: expected {{'type': one of {sorted(cluster)}, 'index': a number}}, "
                              f"got {task!r}")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise DistributeError(f"TF_CONFIG: task.index: {task['index']} is outside cluster.{task['type']} "
                              f"({len(cluster[task['type']])} entries)")
    return config


def _is_chief(config: dict) -> bool:
    task, cluster = config["task"], config["cluster"]
    if cluster.get("chief"):
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def make_strategy(name: str, *, log=print) -> Distribution:
    """The `Distribution` for `--strategy NAME`. Call it before any other TensorFlow work in the
    process: a multi-worker strategy must configure TensorFlow's runtime before it starts."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise DistributeError(f"--strategy: {name!r} is not one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        config = read_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        workers = sum(len(config["cluster"].get(kind, [])) for kind in ("chief", "worker"))
        order = config["cluster"].get("chief", []) + config["cluster"].get("worker", [])
        me = config["cluster"][config["task"]["type"]][config["task"]["index"]]
        dist = Distribution("multiworker", strategy, strategy.num_replicas_in_sync, workers=workers,
                            worker=order.index(me), chief=_is_chief(config))
        log(f"strategy multiworker: {workers} workers, {dist.replicas} replicas in all; this is worker "
            f"{dist.worker}{' (chief: it writes the run folder)' if dist.chief else ''}")
        return dist
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "none"
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        devices = ", ".join(strategy.extended.worker_devices)
        log(f"strategy mirrored: {strategy.num_replicas_in_sync} replica(s) on {devices}")
        return Distribution("mirrored", strategy, strategy.num_replicas_in_sync)
    return Distribution("none", tf.distribute.get_strategy(), 1)


@contextlib.contextmanager
def keras_multiworker(model):
    """Around `model.fit` under `MultiWorkerMirroredStrategy` (a no-op under any other): two
    workarounds for Keras 3 (3.15 here), which does not support that strategy as it is
    (keras-team/keras#20585, tensorflow/tensorflow#72388).

    - Keras builds the metrics and optimizer up front by all-reducing a first batch of nested
      tensors, which the strategy refuses ("Attempt to convert a value (PerReplica ...)"). It
      skips that for a model that recorded no strategy and builds while tracing the train step,
      inside the scope; the variables, made in the scope, stay distributed.
    - Keras averages each step's logged losses and metrics (scalars) over workers with
      `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar; here they are averaged
      with `axis=None`, the mean over replicas, so every worker logs (and early-stops on) the
      same values.

    Written here, narrowly, because there is no public switch for either; remove it when Keras
    handles the strategy."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as keras_tf

    original = keras_tf.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean"):
            return original(values, strategy, reduction)
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)

    saved = model._distribute_strategy
    model._distribute_strategy = None
    keras_tf.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        keras_tf.reduce_per_replica = original
        model._distribute_strategy = saved

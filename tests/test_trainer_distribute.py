"""`trainer fit --strategy`: tf.distribute strategies, input sharded by file, one run written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trainer.cli import cli

# VGG16 at 32 px: few variables, so each process traces its distributed step fast
TINY = ["--backbone", "vgg16", "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
        "--seed", "0"]


def test_mirrored_on_one_cpu_trains_and_saves_without_the_feature_cache(detection_tfrecords, tmp_path):
    import keras

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(run), "--strategy", "mirrored",
                                      *TINY])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "strategy mirrored: 1 replica(s)" in result.output
    assert "feature cache off under --strategy mirrored" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "done"
    assert config["distribute"] == {"strategy": "mirrored", "replicas": 1, "workers": 1}
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert set(model.output) >= {"boxes", "scores"}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multiworker_with_two_local_workers_trains_one_epoch_and_saves_one_model(detection_tfrecords, tmp_path):
    """Issue 16: two processes on localhost (TF_CONFIG), the train split's 2 shards one per worker;
    the chief (worker 0) writes RUN, worker 1 a temporary folder it removes."""
    import keras

    workers = [f"localhost:{port}" for port in _free_ports(2)]
    run = tmp_path / "run"
    scratch = tmp_path / "tmp"  # the workers' TMPDIR: worker 1's temporary run folder goes there
    scratch.mkdir()
    procs = []
    for index in range(2):
        env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", "from trainer.cli import main; main()", "fit", str(detection_tfrecords),
             "--out", str(run), "--strategy", "multiworker", *TINY],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    chief, other = outputs
    assert "strategy multiworker: 2 workers, 2 replicas in all; this is worker 0 (chief" in chief
    assert "this is worker 1" in other and "the chief saved the run" in other
    assert "val: 1 shard file(s) for 2 workers: every worker reads all of them" in chief  # train: 2 files
    assert "Traceback" not in chief + other
    # one model, in RUN; worker 1 left nothing behind
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("model.keras")) == [run.relative_to(tmp_path) /
                                                                                      "model.keras"]
    assert list(scratch.iterdir()) == []
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "done" and config["results"]["epochs"] == 1
    assert config["distribute"] == {"strategy": "multiworker", "replicas": 2, "workers": 2}
    keras.models.load_model(run / "model.keras", compile=False)


def test_workers_get_disjoint_shares_by_file_or_else_by_record(detection_tfrecords):
    from trainer.data import make_dataset, sharding

    def sources(split, **kw):
        ds = make_dataset(detection_tfrecords, split, image_size=32, batch_size=8, with_meta=True, **kw)
        return [s.decode() for _, _, meta in ds for s in meta["source_id"].numpy()]

    # train: 2 shard files, one per worker; val: 1 file, so each worker keeps every other record
    assert sharding(detection_tfrecords, "train", 2) == "file" and sharding(detection_tfrecords, "val", 2) == "record"
    for split, shuffle in (("train", True), ("val", False)):
        everything = sources(split, shuffle=shuffle)
        first, second = (sources(split, shuffle=shuffle, shard=(2, k)) for k in (0, 1))
        assert first and second and not set(first) & set(second)
        assert sorted(first + second) == sorted(everything)


@pytest.mark.parametrize("tf_config,message", [
    (None, "--strategy multiworker: TF_CONFIG is not set"),
    ("{not json", "TF_CONFIG: not valid JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG: task.index: 3 is outside cluster.worker (1 entries)"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "TF_CONFIG: task: expected"),
])
def test_multiworker_without_a_usable_tf_config_stops_with_one_line(tf_config, message, detection_tfrecords,
                                                                     tmp_path, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(tmp_path / "r"),
                                      "--strategy", "multiworker", *TINY])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()

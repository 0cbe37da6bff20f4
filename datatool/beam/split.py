"""`split_on_beam`: `datatool split --runner beam`.

The driver plans exactly as the local runner does (`split.plan_split`: read, check, assign every
image to a split, and `split.shard_items`: which records each shard holds), so `split.csv` is the
same file. The pipeline's elements are runs of at most `CHUNK` consecutive records of one shard.
A worker turns each image into its record with `split.record_bytes`, the function the local
threads call, and writes the run's framed records as one part file. Then one step per shard
concatenates its parts in order (TFRecord framing is per record, so parts concatenate into a
valid file). Only part names go through Beam's shuffle, never image bytes. Every shard holds
the bytes the local runner writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import apache_beam as beam

from . import commit, counter_values, discard, files_in, is_url, join, pipeline_options, read_bytes, \
    run_pipeline, start_output, write_bytes
from ..core.errors import DatatoolError, ImageError
from ..core.tfrecord import SHARD_RE, SPLITS, frame_record, shard_name
from ..split import SplitSummary, finish_split, plan_split, record_bytes, shard_items
from ..core.neardup import DEFAULT_DISTANCE

COUNTERS = "facekit.split"
ERRORS = "errors"
CHUNK = 64  # records per part: enough elements to keep workers busy, few enough files


class _PartFn(beam.DoFn):
    """A run of one shard's records -> one part file of framed records, keyed by its shard; bad
    input goes to the `errors` output as the error itself."""

    def __init__(self, *, tmp: str, max_side: int | None, class_ids: dict | None):
        self.tmp, self.max_side, self.class_ids = tmp, max_side, class_ids

    def process(self, element):
        (name, i, n), part, items = element
        framed, counts = [], {"passthrough": 0, "reencoded": 0}
        for item in items:
            path = item.sample.image_path
            try:
                try:
                    data = read_bytes(str(path))
                except OSError as e:
                    raise ImageError(path=path, reason=f"cannot read image ({e.strerror or e})") from e
                record, passed = record_bytes(item, max_side=self.max_side, class_ids=self.class_ids, data=data)
            except DatatoolError as e:
                yield beam.pvalue.TaggedOutput(ERRORS, e)
                return
            framed.append(frame_record(record))
            counts["passthrough" if passed else "reencoded"] += 1
        target = join(self.tmp, f"_part-{shard_name(name, i, n)}-{part:06d}")
        write_bytes(target, b"".join(framed))
        for key, value in counts.items():
            beam.metrics.Metrics.counter(COUNTERS, key).inc(value)
        yield (name, i, n), (part, target)


def _concat_shard(keyed, *, tmp: str) -> None:
    """One shard from its parts, in order; the parts are removed."""
    from apache_beam.io.filesystems import FileSystems

    (name, i, n), parts = keyed
    parts = [p for _, p in sorted(parts)]
    with FileSystems.create(join(tmp, shard_name(name, i, n))) as f:
        for part in parts:
            f.write(read_bytes(part))
    FileSystems.delete(parts)


def split_on_beam(root: Path, *, out, ratios: Sequence[float] | str = (0.7, 0.15, 0.15), seed: int = 0,
                  group_by: str = "group", shards: str | int = "auto", max_side: int | None = None,
                  task: str = "detection", overwrite: bool = False, beam_options: str | None = None,
                  group_near_duplicates: bool = False, near_dup_distance: int = DEFAULT_DISTANCE,
                  skip_errors: bool = False, command: str | None = None) -> SplitSummary:
    """`split.split` on Apache Beam: the same plan, `split.csv` and records per split (see module
    docstring); `out` may be a `FileSystems` path (`gs://...`). Nothing final-named is written
    unless every record was made."""
    options = pipeline_options(beam_options)  # a bad option is refused before any work
    out = str(out)
    if not is_url(out) and Path(out).resolve() == Path(root).resolve():
        raise DatatoolError(f"{out}: --out must not be the dataset folder itself")
    plan = plan_split(root, ratios=ratios, seed=seed, group_by=group_by, shards=shards, max_side=max_side,
                      task=task, group_near_duplicates=group_near_duplicates, near_dup_distance=near_dup_distance,
                      skip_errors=skip_errors)
    tmp = start_output(out, overwrite=overwrite)
    # the plan's read-ahead bytes stay on the driver: each worker reads its own images
    parts = [((name, i, n), k, [dataclasses.replace(it, data=None) for it in items[start:start + CHUNK]])
             for name, i, n, items in shard_items(plan) for k, start in enumerate(range(0, len(items), CHUNK))]

    def build(p):
        made = (p | "parts" >> beam.Create(parts)
                | "records" >> beam.ParDo(_PartFn(tmp=tmp, max_side=plan.max_side, class_ids=plan.class_ids))
                .with_outputs(ERRORS, main="parts"))
        (made.parts | "by shard" >> beam.GroupByKey()
         | "shards" >> beam.Map(_concat_shard, tmp=tmp))
        (made[ERRORS] | "collect" >> beam.combiners.ToList()
         | "keep" >> beam.Map(errors_sink, path=join(tmp, "_errors.pickle")))

    try:
        result = run_pipeline(build, options)
        bad = _read_errors(join(tmp, "_errors.pickle"))
        if bad:
            # the one the local runner stops at (the first in record order), whichever worker met it first
            order = {str(it.sample.image_path): k for k, it in
                     enumerate(it for name in SPLITS for it in plan.per_split[name])}
            raise min(bad, key=lambda e: (order.get(getattr(e, "path", ""), len(order)), str(e)))
        written = {name: [] for name in SPLITS}
        shards = [r for r in files_in(tmp) if SHARD_RE.match(r)]
        for r in shards:
            written[SHARD_RE.match(r).group("split")].append(r)
        counts = counter_values(result, COUNTERS)
        commit(tmp, out, shards)
    finally:
        discard(tmp)
    written = {k: sorted(v) for k, v in written.items()}
    if overwrite:  # shards of an earlier run with other shard counts would be read as data
        _drop_stale_shards(out, keep={r for v in written.values() for r in v})
    return _finish(plan, out=out, written=written, passthrough=counts.get("passthrough", 0),
                   reencoded=counts.get("reencoded", 0), command=command)


def errors_sink(errors: list, *, path: str) -> None:
    """Keep the bad-input errors of a run (pickled) for the driver; only a file when there are some."""
    import pickle

    if errors:
        write_bytes(path, pickle.dumps(errors))


def _read_errors(path: str) -> list:
    import pickle

    try:
        return pickle.loads(read_bytes(path))  # our own file, written by this run's pipeline
    except OSError:
        return []


def _drop_stale_shards(out: str, *, keep: set[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    if is_url(out):
        found = [m.path for m in FileSystems.match([join(out, "*.tfrecord")])[0].metadata_list]
    else:
        found = [str(p) for p in Path(out).glob("*.tfrecord")]
    stale = [f for f in found if SHARD_RE.match(f.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
             and Path(f).name not in keep]
    if stale:
        FileSystems.delete(stale)


def _finish(plan, *, out: str, written, passthrough: int, reencoded: int, command: str | None) -> SplitSummary:
    """split.csv, labels.txt and dataset.json as the local runner writes them (`finish_split`):
    straight into a local OUT, or made in a local folder and copied to a remote one."""
    import tempfile

    info = {"runner": "beam"}
    if not is_url(out):
        return finish_split(plan, out=Path(out), written=written, passthrough=passthrough, reencoded=reencoded,
                            overwrite=False, command=command, **info)
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="facekit-split-") as staging:
        summary = finish_split(plan, out=Path(staging), written=written, passthrough=passthrough,
                               reencoded=reencoded, overwrite=False, command=command, **info)
        names = sorted(p.name for p in Path(staging).iterdir())
        FileSystems.copy([str(Path(staging) / n) for n in names], [join(out, n) for n in names])
    return dataclasses.replace(summary, out=out)

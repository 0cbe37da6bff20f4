"""`augment_on_beam`: `datatool augment --runner beam`.

The driver checks the request and lists the sources as the local runner does
(`augment.run.plan_augment`); each Beam element is one source, made by the local runner's own
`_make` (which calls `augment.tasks`, the pure per-source functions) with its bytes read through
`FileSystems`, and its files written into the run's hidden folder, the JSON before its image. The
driver gathers the manifest rows, renames every file onto its final name, then writes
manifest.csv and dataset.json: the same bytes as `--runner local` for the same input and seed.

A source that cannot be read or decoded is reported and skipped, as on the local runner; a
failure of the pipeline itself (a bug, a full disk, a killed worker) leaves no final-named file.
There is no --resume on Beam: a run is all or nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import apache_beam as beam

from . import commit, discard, files_in, join, pipeline_options, put_final, put_record, read_bytes, \
    run_pipeline, start_output, write_bytes
from ..augment.recipes import build_pipeline
from ..augment.run import (MANIFEST, RECORD_COUNTS, AugmentSummary, _make, _RunOptions, manifest_text,
                           plan_augment)
from ..augment.tasks import Settings, json_rel

RESULTS = "_facekit-results"  # inside the hidden folder, beside images/ and people/; never committed


class _AugmentFn(beam.DoFn):
    """One source -> its files in the run folder, and its manifest rows, counts and errors."""

    def __init__(self, recipe, opt: _RunOptions, tmp: str):
        self.recipe, self.opt, self.tmp = recipe, opt, tmp

    def setup(self):
        import cv2

        self._threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # the runner runs one source per core already, as the local pool does
        self.pipeline = build_pipeline(self.recipe)

    def teardown(self):
        import cv2

        cv2.setNumThreads(getattr(self, "_threads", cv2.getNumThreads()))

    def process(self, element):
        order, source = element  # order: the source's place in the local runner's order (for errors)
        made = _make(source, self.opt, self.pipeline, read=read_bytes)
        if isinstance(made, dict):  # bad input: reported as the local runner reports it
            yield json.dumps({**made, "order": order})
            return
        for o in made.result.outputs:
            if o.json_text is not None:  # the JSON first, as on the local runner
                write_bytes(join(self.tmp, json_rel(o.rel)), o.json_text.encode("utf-8"))
            write_bytes(join(self.tmp, o.rel), o.image)
            made.rows.append(o.row)
        made.counts.update(made.result.counts)
        yield json.dumps({"rows": made.rows, "counts": dict(made.counts), "errors": [], "order": order})


def augment_on_beam(src: Path, *, out, recipe="default", factor: int = 30, seed: int = 0,
                    keep_originals: bool = True, overwrite: bool = False, quality: int = 95,
                    skip_errors: bool = False, beam_options: str | None = None,
                    command: str = "datatool augment") -> AugmentSummary:
    """`augment.augment_dataset` on Apache Beam (see module docstring); `out` may be a
    `FileSystems` URL (`gs://...`)."""
    options = pipeline_options(beam_options)  # a bad option is refused before any work
    src, out = Path(src), str(out)
    recipe, sources, summary, settings = plan_augment(src, out=out, recipe=recipe, factor=factor, seed=seed,
                                                      keep_originals=keep_originals, quality=quality,
                                                      skip_errors=skip_errors)
    tmp = start_output(out, overwrite=overwrite)
    opt = _RunOptions(out=Path(out), factor=factor, keep_originals=keep_originals, resume=False,
                      overwrite=overwrite, settings=Settings.of(recipe, factor=factor, seed=seed, quality=quality))

    def build(p):
        (p | "sources" >> beam.Create(list(enumerate(sources)))
         | "augment" >> beam.ParDo(_AugmentFn(recipe, opt, tmp))
         | "results" >> beam.io.WriteToText(join(tmp, RESULTS, "part")))

    parent = None
    rows: list[dict] = []
    errors: list[tuple[int, list]] = []
    try:
        run_pipeline(build, options)
        made = files_in(tmp)
        for rel in made:
            if rel.startswith(RESULTS + "/"):
                for line in read_bytes(join(tmp, rel)).decode("utf-8").splitlines():
                    result = json.loads(line)
                    rows.extend(result["rows"])
                    summary.counts.update(result["counts"])
                    if result["errors"]:
                        errors.append((result["order"], result["errors"]))
        summary.errors.extend(e for _order, some in sorted(errors) for e in some)
        from ..core.fsutil import read_record

        parent = read_record(src)
        parents = [{"path": str(src), "record": parent}] if parent else [{"path": str(src)}]
        # marked unfinished first: a driver killed while renaming leaves a folder that says so
        # (`--runner local --resume` finishes it)
        put_record(out, command=command, complete=False, runner="beam", **settings, parents=parents)
        commit(tmp, out, [r for r in made if not r.startswith(RESULTS + "/")])
    finally:
        discard(tmp)

    rows.sort(key=lambda r: r["output"])
    put_final(out, MANIFEST, manifest_text(rows).encode("utf-8"))
    summary.manifest = join(out, MANIFEST)
    counts = {k: Counter(summary.counts).get(k, 0) for k in RECORD_COUNTS}
    summary.record = put_record(out, command=command, complete=not summary.errors, runner="beam", **settings,
                                counts=counts, errors=summary.errors[:100], parents=parents)
    return summary

"""Apache Beam runners for `augment` and `split` (`--runner beam`): the same per-sample functions
as the local runners, scheduled by Beam (DirectRunner here; Dataflow, Flink or Spark elsewhere).

A layer above the stages: `beam.augment` drives `augment.tasks`, `beam.split` drives
`split.record_bytes`; the CLI calls them. Apache Beam is an optional extra (`facekit[beam]`),
imported only when a Beam run starts.

What both runners share lives here: the missing-extra message, `--beam-options` parsing, and
the file layer. Outputs go through Beam's `FileSystems`, so `--out` may be any path it knows
(`gs://`, `s3://` with Beam's gcp/aws extras). Each run writes into a hidden folder inside OUT
(`.facekit-beam-<id>/`) and the driver renames its files onto their final names only after the
pipeline succeeded: a failed or interrupted pipeline leaves no final-named file. The dataset
folder is listed by the driver (a local or mounted path); workers read each image through
`FileSystems` by the path the driver listed, so a remote runner needs that path to reach them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
import uuid
from pathlib import Path

from ..core.errors import DatatoolError, OutputExistsError

EXTRA = "facekit[beam]"
TMP_PREFIX = ".facekit-beam-"


def require_beam():
    """The `apache_beam` module, or a `DatatoolError` that names the extra to install."""
    try:
        import apache_beam
    except ImportError as e:
        raise DatatoolError(f"--runner beam needs Apache Beam, which is not installed: "
                            f"pip install \"{EXTRA}\" (or use --runner local)") from e
    return apache_beam


def pipeline_options(text: str | None):
    """`--beam-options "..."` (split like a shell line) -> Beam `PipelineOptions`.

    An option Beam does not know, or a value it refuses, is a one-line `DatatoolError`: Beam
    itself would drop an unknown flag with a log line (a typo in `--direct_num_workers` would
    silently run on one worker) and exit through argparse on a bad value.
    """
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    try:
        flags = shlex.split(text or "")
    except ValueError as e:
        raise DatatoolError(f"--beam-options: {e} in {text!r}") from None
    stray = [f for f in flags if not f.startswith("-")]
    if not any(f.startswith("--default_sdk_harness_log_level") for f in flags):
        flags.append("--default_sdk_harness_log_level=ERROR")  # workers' INFO lines would bury the summary
    options = PipelineOptions(flags)
    err = io.StringIO()
    beam_log = logging.getLogger()  # Beam warns "Discarding unparseable args" on the root logger
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(err):
            known = options.get_all_options(retain_unknown_options=False)
            every = options.get_all_options(retain_unknown_options=True)
    except SystemExit:  # argparse's way out: its message is the last line it printed
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        why = lines[-1].split("error: ", 1)[-1] if lines else "not accepted"
        raise DatatoolError(f"--beam-options: {why}") from None
    finally:
        beam_log.setLevel(level)
    unknown = sorted(set(every) - set(known))
    if unknown or stray:
        bad = ", ".join([f"--{u}" for u in unknown] + stray)
        raise DatatoolError(f"--beam-options: Beam does not know {bad} (see the pipeline options of your runner)")
    return options


# --------------------------------------------------------------------------------------------
# Files, through Beam's FileSystems (local paths, gs://, s3://, ...)
# --------------------------------------------------------------------------------------------

def is_url(path) -> bool:
    return "://" in str(path)


def join(base, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(str(base), *parts)


def read_bytes(path) -> bytes:
    """A file's bytes through `FileSystems` (a missing file raises an `OSError` naming it)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(str(path)) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write a file through `FileSystems`: only ever into a run's hidden folder, never onto a final name."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(data)


def _listing(folder: str) -> list[str]:
    """Every file under `folder` (recursively), as full paths."""
    from apache_beam.io.filesystems import FileSystems

    if not is_url(folder):
        return [str(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    found = FileSystems.match([join(folder, "**")])[0].metadata_list
    return sorted(m.path for m in found)


def start_output(out: str, *, overwrite: bool) -> str:
    """Check OUT as the local runners do (a non-empty one needs `overwrite`), remove the hidden
    folders of killed runs, and return a fresh hidden folder inside OUT for this run."""
    from apache_beam.io.filesystems import FileSystems

    from ..core.fsutil import prepare_output_dir

    out = str(out)
    if is_url(out):
        entries = _listing(out)
        for stale in {e[: e.index(TMP_PREFIX)] + e[e.index(TMP_PREFIX):].split("/")[0] for e in entries
                      if TMP_PREFIX in e}:
            discard(stale)
        if any(TMP_PREFIX not in e for e in entries) and not overwrite:
            raise OutputExistsError(f"{out}: folder is not empty (use --overwrite to write into it anyway)")
    else:
        if Path(out).is_dir():
            for stale in Path(out).glob(TMP_PREFIX + "*"):
                FileSystems.delete([str(stale)])
        prepare_output_dir(Path(out), overwrite=overwrite)
    return join(out, TMP_PREFIX + uuid.uuid4().hex[:12])


def files_in(tmp: str) -> list[str]:
    """The files a run wrote into its hidden folder, relative to it (POSIX separators)."""
    prefix = tmp.rstrip("/") + "/"
    return [p[len(prefix):].replace("\\", "/") if p.startswith(prefix) else str(Path(p).relative_to(tmp).as_posix())
            for p in _listing(tmp)]


def commit(tmp: str, out: str, rels: list[str]) -> None:
    """Rename `tmp/rel` onto `out/rel` for each of `rels` (folders made as needed)."""
    from apache_beam.io.filesystems import FileSystems

    if not rels:
        return
    folders = sorted({str(Path(r).parent.as_posix()) for r in rels} - {"."})
    for folder in folders:
        with contextlib.suppress(IOError):  # already there (local); object stores have no folders
            FileSystems.mkdirs(join(out, folder))
    FileSystems.rename([join(tmp, r) for r in rels], [join(out, r) for r in rels])


def put_final(out: str, name: str, data: bytes) -> None:
    """Write OUT/name: atomically (temp name, rename) in a local folder; an object store shows an
    object only once it is whole."""
    from apache_beam.io.filesystems import FileSystems

    from ..core.fsutil import write_bytes_atomic

    if is_url(out):
        with FileSystems.create(join(out, name)) as f:
            f.write(data)
    else:
        write_bytes_atomic(Path(out) / name, data)


def put_record(out: str, **info) -> str:
    """`fsutil.write_record` into OUT, which may be a URL; returns where it went."""
    import tempfile

    from ..core.fsutil import RECORD_NAME, write_record

    if not is_url(out):
        return str(write_record(Path(out), **info))
    with tempfile.TemporaryDirectory(prefix="facekit-record-") as staging:
        put_final(out, RECORD_NAME, write_record(Path(staging), **info).read_bytes())
    return join(out, RECORD_NAME)


def discard(tmp: str) -> None:
    """Remove a run's hidden folder and what is left in it."""
    from apache_beam.io.filesystems import FileSystems

    # object stores delete "a folder" (every object under a prefix) when the path ends with "/"
    with contextlib.suppress(Exception):  # nothing there, or already gone: nothing to undo
        FileSystems.delete([tmp.rstrip("/") + "/" if is_url(tmp) else tmp])


def run_pipeline(build, options) -> object:
    """Build a pipeline with `build(pipeline)`, run it and wait; returns Beam's result (for metrics).

    Bad input never fails a pipeline: the DoFns hand the error back as data, so the driver raises
    it as the local runner would. What does fail one (a bug, a full disk, a killed worker) comes
    back as a one-line `DatatoolError`; the caller then discards the run's hidden folder."""
    import apache_beam as beam

    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    chatty = logging.getLogger("apache_beam")
    level = chatty.level
    if level == logging.NOTSET:  # unless the caller chose a level: Beam's runner notes are not for the user
        chatty.setLevel(logging.ERROR)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except (DatatoolError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - Beam re-raises an element's error inside its own
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # the innermost "SomeError: why" line, for the reader (Beam appends its own context after it)
        said = [ln for ln in lines if ": " in ln and ln.split(": ", 1)[0].split(".")[-1].endswith(("Error", "Exception"))]
        why = said[-1] if said else (lines[0] if lines else type(e).__name__)
        raise DatatoolError(f"the Beam pipeline failed, nothing was written to the output: {why}") from e
    finally:
        chatty.setLevel(level)
    return result


def counter_values(result, namespace: str) -> dict[str, int]:
    """The committed values of the counters a pipeline kept under `namespace`."""
    from apache_beam.metrics.metric import MetricsFilter

    got = result.metrics().query(MetricsFilter().with_namespace(namespace))
    values: dict[str, int] = {}
    for c in got["counters"]:
        values[c.key.metric.name] = values.get(c.key.metric.name, 0) + int(c.committed or 0)
    return values

"""`augment_dataset`: the local runner. Plans the sources, finishes an interrupted run (--resume),
runs the per-source functions of `tasks.py` in this process or a standard process pool, writes
their files, the manifest and the provenance record.

Output layout of `augment_dataset(SRC, out=DST)`:

    DST/images/<key stem>__aug0007.jpg (+ .json)   variants, the labelme JSON written first
    DST/images/<key>              (+ .json)        originals, copied byte for byte
    DST/people/NAME/<stem>__aug0007.jpg            variants of identity crops (no JSON; their
                                                   group is stamped in a JPEG comment)
    DST/manifest.csv                               one row per output, sorted by output
    DST/dataset.json                               what made the folder
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..core.errors import DatatoolError, ImageError, OutputExistsError
from ..core.sample import Sample
from .recipes import Recipe, build_pipeline, first_line, load_recipe
from .tasks import (MANIFEST_COLUMNS, ImageSource, PersonSource, Settings, SourceResult, augment_labelled_image,
                    augment_person_crop, json_rel, manifest_row, name_digits, variant_rel)
from .variants import variant_seed

MANIFEST = "manifest.csv"
IN_FLIGHT_PER_WORKER = 2  # sources handed to each pool process at a time: one running, one waiting
VARIANTS_PER_EXTRA_WORKER = 300  # default --workers: one more process per this many variants


@dataclass(frozen=True)
class _Source:
    """One source as a worker gets it: where to read it (each worker reads its own bytes)."""

    kind: str  # "images" | "people"
    path: Path
    rel: str  # images/<key> or people/NAME/<file>: where the original goes, what the manifest names
    sample: Sample | None  # the annotation of an image; None for a person crop


@dataclass(frozen=True)
class _RunOptions:
    out: Path
    factor: int
    keep_originals: bool
    resume: bool
    overwrite: bool
    settings: Settings


@dataclass
class AugmentSummary:
    """What `augment_dataset` did; `counts` goes into dataset.json."""

    out: Path
    recipe: str
    recipe_sha256: str
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    issues: list = field(default_factory=list)
    manifest: Path | None = None
    record: Path | None = None
    rejected: list[Path] = field(default_factory=list)  # labelme JSONs with errors, left out (skip_errors)


# --------------------------------------------------------------------------------------------
# One source, in whichever process runs it
# --------------------------------------------------------------------------------------------

def _finished(out: Path, rel: str, *, labelled: bool) -> Sample | bool | None:
    """A finished output: its annotation (labelled) or True (a crop); None if it must be made.

    An image is finished when it exists, and for a labelled one, when its JSON beside it reads
    too; the JSON is written before the image, so an interrupted pair is made again."""
    from ..formats.labelme import read_labelme

    img = out / rel
    if not img.is_file():
        return None
    if not labelled:
        return True
    jp = out / json_rel(rel)
    if not jp.is_file():
        return None
    try:
        return read_labelme(jp)
    except DatatoolError:
        return None  # damaged: make it again


def _unfinished(source: _Source, data: bytes, opt: _RunOptions, rows: list, counts: Counter):
    """--resume: the variant indices still to make and whether the original is, adding the manifest
    rows and counts of what a previous run finished."""
    from ..core.images import sha256_bytes

    labelled = source.kind == "images"
    n_in = len(source.sample.boxes) if labelled else ""
    sha = sha256_bytes(data)
    todo = []
    for v in range(opt.factor):
        rel = variant_rel(source.rel, v, opt.settings.digits)
        done = _finished(opt.out, rel, labelled=labelled)
        if done is None:
            todo.append(v)
            continue
        seed = variant_seed(recipe_sha256=opt.settings.recipe_sha256, image_sha256=sha, variant=v,
                            seed=opt.settings.seed)
        n_out = ""
        if labelled:
            n_out = len(done.boxes)
            info = done.attributes.get("augment")
            redraws = info.get("redraws", 0) if isinstance(info, dict) else 0
            counts["redraws"] += redraws if isinstance(redraws, int) else 0
            counts["negatives_made"] += bool(n_in and not n_out)
        counts["resumed"] += 1
        counts["variants"] += 1
        rows.append(manifest_row(rel, source.rel, v, seed, opt.settings.recipe_sha256, n_in, n_out))
    original = opt.keep_originals
    if original and _finished(opt.out, source.rel, labelled=labelled) is not None:
        original = False
        counts["resumed"] += 1
        counts["originals"] += 1
        rows.append(manifest_row(source.rel, source.rel, boxes_in=n_in, boxes_out=n_in))
    return tuple(todo), original


def _failed(source: _Source, e: BaseException) -> dict:
    if isinstance(e, DatatoolError):
        error = str(e)
    elif isinstance(e, OSError):
        error = f"{e.filename or source.path}: {e.strerror or e}"
    else:
        error = f"{source.path}: augmentation failed ({type(e).__name__}: {first_line(e)})"
    return {"rows": [], "counts": {"failed_sources": 1}, "errors": [error]}


@dataclass(frozen=True)
class _Made:
    """One source's outputs, made and not yet written, with what --resume found finished."""

    source: _Source
    result: SourceResult
    rows: list
    counts: Counter


def _make(source: _Source, opt: _RunOptions, pipeline, *, read=None, encoder=None) -> _Made | dict:
    """Read one source (with `read(path) -> bytes` if given) and run its task function (its JPEGs
    encoded in `encoder`, an Executor, if given); a failure comes back as its result (see
    `_failed`). One odd source is reported and skipped, never stops the others."""
    try:
        try:
            data = read(source.path) if read else source.path.read_bytes()
        except OSError as e:
            raise ImageError(f"{source.path}: cannot read image ({e.strerror or e})") from e
        rows: list = []
        counts: Counter = Counter()
        if opt.resume:
            variants, original = _unfinished(source, data, opt, rows, counts)
        else:
            variants, original = tuple(range(opt.factor)), opt.keep_originals
        if source.kind == "people":
            from ..core.provenance import capture_info

            task = PersonSource(source.rel, data, capture_info(source.path) or {}, variants, original,
                                str(source.path))
            result = augment_person_crop(task, settings=opt.settings, pipeline=pipeline, encoder=encoder)
        else:
            task = ImageSource(source.rel, data, source.sample, variants, original, str(source.path))
            result = augment_labelled_image(task, settings=opt.settings, pipeline=pipeline, encoder=encoder)
        return _Made(source, result, rows, counts)
    except Exception as e:  # noqa: BLE001 - one odd image must not stop the other thousands
        return _failed(source, e)


def _write(made: _Made | dict, opt: _RunOptions) -> dict:
    """Write what `_make` made; returns the source's manifest rows, counts and errors."""
    from ..core.fsutil import write_bytes_atomic, write_text_atomic

    if isinstance(made, dict):
        return made
    overwrite = opt.overwrite or opt.resume  # resume replaces only unfinished outputs
    try:
        for o in made.result.outputs:
            if o.json_text is not None:  # the JSON first: never an image that looks finished without it
                write_text_atomic(opt.out / json_rel(o.rel), o.json_text, overwrite=overwrite)
            write_bytes_atomic(opt.out / o.rel, o.image, overwrite=overwrite)
            made.rows.append(o.row)
    except Exception as e:  # noqa: BLE001 - reported with the source, as in `_make`
        return _failed(made.source, e)
    made.counts.update(made.result.counts)
    return {"rows": made.rows, "counts": dict(made.counts), "errors": []}


# --------------------------------------------------------------------------------------------
# Running the sources: in this process, or in a standard process pool
# --------------------------------------------------------------------------------------------

_WORKER: dict = {}  # per pool process: the pipeline and options its initializer built


def _init_worker(recipe: Recipe, opt: _RunOptions) -> None:
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C: running sources finish
    cv2.setNumThreads(1)  # one process per core already
    _WORKER.update(pipeline=build_pipeline(recipe), options=opt)


def _work_in_worker(source: _Source) -> dict:
    opt = _WORKER["options"]
    return _write(_make(source, opt, _WORKER["pipeline"]), opt)


def _start_method():
    """`fork` where it is safe (Linux, no other thread in this process, TensorFlow not loaded):
    workers then start in milliseconds with Albumentations already imported. Otherwise
    `forkserver`, preloaded with the heavy imports: a fresh interpreter, safe whatever the
    caller has loaded, at about a second of start-up."""
    import multiprocessing as mp
    import threading

    methods = mp.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1 \
            and "tensorflow" not in sys.modules:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["albumentations", "cv2", "datatool.augment"])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def _sigint_blocked():
    """Processes started inside inherit a blocked SIGINT, so a Ctrl-C that lands while they start
    (before their initializer ignores it) cannot kill them with a traceback; this process gets
    it as soon as the block ends."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _process_pool(sources, *, recipe: Recipe, opt: _RunOptions, workers: int):
    """Start `workers` processes and yield an iterator of the sources' results, in order, with at
    most IN_FLIGHT_PER_WORKER sources per process handed out at a time. On an error or Ctrl-C no
    more sources are handed out and running ones finish (their files are written atomically)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_start_method(), initializer=_init_worker,
                               initargs=(recipe, opt))
    todo = iter(sources)
    pending: deque = deque()

    def ordered():
        while pending:
            head = pending.popleft()
            pending.extend(pool.submit(_work_in_worker, s) for s in islice(todo, 1))  # keep the pool fed
            try:
                yield head.result()
            except BrokenProcessPool as e:
                raise DatatoolError("a worker process died (out of memory? try fewer --workers); "
                                    "finished outputs are kept: rerun with --resume") from e

    try:
        with _sigint_blocked():  # the processes start with the first submissions
            pending.extend(pool.submit(_work_in_worker, s) for s in islice(todo, IN_FLIGHT_PER_WORKER * workers))
        yield ordered()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _in_process(sources, *, recipe: Recipe, opt: _RunOptions):
    """The same work in this process, OpenCV pinned to one thread as in a pool process.

    One helper thread JPEG-encodes each variant and writes each source's files while this thread
    draws the next variants: encoding (in OpenCV) and writing (system calls) leave the GIL, so
    they run beside the pixel work instead of after it, on a second core where there is one.
    The bytes are the same as a pool worker's. At most one source waits to be written and
    `tasks.ENCODES_IN_FLIGHT` variants to be encoded. On one core the helper only writes
    (encoding there would just take turns with this thread, at the cost of the switches). The
    helper is never interrupted by Ctrl-C (only this thread gets it), so a source's files are
    always written whole; leaving waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    pipeline = build_pipeline(recipe)

    def results(writer):
        encoder = writer if default_workers() > 1 else None
        writing = None
        for s in sources:
            made = _make(s, opt, pipeline, encoder=encoder)
            if writing is not None:
                yield writing.result()
            writing = writer.submit(_write, made, opt)
        if writing is not None:
            yield writing.result()

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="augment-helper") as writer:
            yield results(writer)
    finally:
        cv2.setNumThreads(threads)


def _results(sources: list[_Source], *, recipe: Recipe, opt: _RunOptions, workers: int, progress: bool):
    """Each source's result, in the order of `sources`."""
    from tqdm import tqdm

    run = (_in_process(sources, recipe=recipe, opt=opt) if workers == 1
           else _process_pool(sources, recipe=recipe, opt=opt, workers=workers))
    with run as results:
        if not progress:  # no tqdm at all: even a disabled one leaves its monitor thread running
            yield from results
            return
        # the bar's monitor thread starts after the pool's processes (see _start_method)
        with tqdm(total=len(sources), unit="img", desc="augment", dynamic_ncols=True) as bar:
            for result in results:
                bar.update(1)
                yield result


# --------------------------------------------------------------------------------------------
# A whole dataset
# --------------------------------------------------------------------------------------------

def _plan(src: Path, *, keep_originals: bool, factor: int) -> tuple[list[_Source], object]:
    from ..dataset import list_people, load_dataset

    ds = load_dataset(src)
    sources = [_Source("images", Path(s.image_path), f"images/{s.image_id}", s) for s in ds.labeled]
    people_root = Path(src) / "people"
    for files in list_people(src).values():
        sources += [_Source("people", f, f"people/{f.relative_to(people_root).as_posix()}", None) for f in files]
    # two sources must never write the same output (a.jpg and a.png share the stem "a"; a source
    # named a__aug0001.jpg would meet variant 1 of a.jpg)
    digits = name_digits(factor)
    owner: dict[str, str] = {}
    for s in sources:
        outs = [s.rel] if keep_originals else []
        outs += [variant_rel(s.rel, v, digits) for v in range(factor)]
        for o in outs:
            k = o.lower()  # case-insensitive file systems (macOS, Windows)
            if owner.setdefault(k, s.rel) != s.rel:
                raise DatatoolError(f"{s.path}: its output {o} would also be written for {owner[k]} "
                                    "(rename one of them)")
    return sources, ds


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _sweep_temp_files(out: Path) -> None:
    for stale in out.rglob(".facekit-tmp-*"):  # a finished file was never renamed over it
        stale.unlink(missing_ok=True)


def plan_augment(src: Path, *, out, recipe, factor: int, seed: int, keep_originals: bool, quality: int,
                 skip_errors: bool = False):
    """Check a request and list its sources, for every runner: `(recipe, sources, summary, settings)`,
    the summary holding the dataset's issues and skipped counts, the settings what dataset.json
    records. `out` may be a URL (a remote runner's), which cannot lie inside the local `src`.
    An annotated image whose JSON has an error stops the run (`RejectedImages`) unless
    `skip_errors`, which leaves it out and lists it in `summary.rejected`."""
    from ..dataset import refuse_rejected

    if factor < 0:
        raise DatatoolError(f"--factor must be 0 or more, got {factor}")
    if not 1 <= quality <= 100:
        raise DatatoolError(f"--quality must be between 1 and 100, got {quality}")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if not src.is_dir():
        raise DatatoolError(f"{src}: dataset folder not found")
    if "://" not in str(out):
        from ..core.fsutil import refuse_overlap

        refuse_overlap(Path(out), src)

    sources, ds = _plan(src, keep_originals=keep_originals, factor=factor)
    summary = AugmentSummary(out=out, recipe=recipe.name, recipe_sha256=recipe.sha256,
                             issues=[i for i in ds.issues if i.severity == "error"],
                             rejected=refuse_rejected(ds, skip_errors=skip_errors))
    summary.counts["unlabeled_skipped"] = len(ds.unlabeled)
    summary.counts["rejected_skipped"] = len(summary.rejected)
    rejected = {str(p) for p in summary.rejected}
    summary.counts["unreadable_skipped"] = len({i.file for i in summary.issues
                                                if i.code == "bad-image" and i.file not in rejected})
    if not sources:
        raise DatatoolError(f"{src}: nothing to augment: no labeled images (image + labelme JSON) "
                            "and no people/NAME/*.jpg crops")

    settings = {"source": str(src), "recipe": {"name": recipe.name, "sha256": recipe.sha256,
                                                "path": str(recipe.path)},
                "seed": seed, "factor": factor, "keep_originals": keep_originals, "quality": quality}
    return recipe, sources, summary, settings


def augment_dataset(src: Path, *, out: Path, recipe: str | Path | Recipe = "default", factor: int = 30,
                    seed: int = 0, workers: int | None = None, keep_originals: bool = True,
                    overwrite: bool = False, resume: bool = False, quality: int = 95, skip_errors: bool = False,
                    progress: bool = False, command: str = "datatool augment") -> AugmentSummary:
    """Write `factor` augmented variants of every labeled image (and people crop) of `src` into `out`.

    Byte-identical outputs for any `workers`; `resume` finishes only what is missing (a variant
    is done when its image and its JSON are both there; the JSON is written first); a non-empty
    `out` is refused without `overwrite` or `resume`. Unlabeled images are skipped; unreadable
    sources are reported in `errors`. An annotated image whose JSON has an error stops the run
    before anything is written (`dataset.RejectedImages`), unless `skip_errors` leaves it out.
    """
    from ..core.fsutil import prepare_output_dir, read_record, write_record

    src, out = Path(src), Path(out)
    recipe, sources, summary, settings = plan_augment(src, out=out, recipe=recipe, factor=factor, seed=seed,
                                                      keep_originals=keep_originals, quality=quality,
                                                      skip_errors=skip_errors)
    if resume and out.is_dir() and any(out.iterdir()):
        prev = read_record(out)
        if prev is None:
            raise DatatoolError(f"{out}: no dataset.json here, so this is not an unfinished augment output "
                                "(use --overwrite to write into it anyway)")
        before = {**prev, "recipe": (prev.get("recipe") or {}).get("sha256")}
        now = {**settings, "recipe": recipe.sha256}
        differs = [k for k in ("recipe", "seed", "factor", "keep_originals", "quality") if before.get(k) != now[k]]
        if differs:
            raise DatatoolError(f"{out}: was made with other settings ({', '.join(differs)} differ in "
                                f"{out / 'dataset.json'}); resume with the same options or use --overwrite")
    elif not (resume or overwrite) and out.is_dir() and (read_record(out) or {}).get("complete") is False:
        raise OutputExistsError(f"{out}: holds an unfinished augment run: add --resume to finish it "
                                "(or --overwrite to write into it anyway)")
    prepare_output_dir(out, overwrite=overwrite, resume=resume)
    _sweep_temp_files(out)  # left by a killed run

    if workers is None:  # all cores, but not for a job too small to repay starting the processes
        workers = min(default_workers(), 1 + len(sources) * max(factor, 1) // VARIANTS_PER_EXTRA_WORKER)
    n_workers = max(1, min(workers, len(sources)))
    parent = read_record(src)
    parents = [{"path": str(src), "record": parent}] if parent else [{"path": str(src)}]
    write_record(out, command=command, complete=False, workers=n_workers, **settings, parents=parents)

    opt = _RunOptions(out=out, factor=factor, keep_originals=keep_originals, resume=resume, overwrite=overwrite,
                      settings=Settings.of(recipe, factor=factor, seed=seed, quality=quality))
    rows: list[dict] = []
    try:
        # closing: whatever stops this loop stops the pool before the sweep below
        with contextlib.closing(_results(sources, recipe=recipe, opt=opt, workers=n_workers,
                                         progress=progress)) as results:
            for result in results:
                rows.extend(result["rows"])
                summary.counts.update(result["counts"])
                summary.errors.extend(result["errors"])
    except KeyboardInterrupt:
        # Every process has stopped by now; a Ctrl-C landing between creating a temp file and
        # the code that removes it could still leave one behind (DST is ours).
        _sweep_temp_files(out)
        raise

    rows.sort(key=lambda r: r["output"])
    summary.manifest = _write_manifest(out / MANIFEST, rows)
    counts = {k: summary.counts.get(k, 0) for k in RECORD_COUNTS}
    summary.record = write_record(out, command=command, complete=not summary.errors, workers=n_workers,
                                  **settings, counts=counts, errors=summary.errors[:100], parents=parents)
    return summary


RECORD_COUNTS = ("sources", "people_sources", "negative_sources", "originals", "variants", "negatives_made",
                 "redraws", "dropped", "resumed", "failed_sources", "unlabeled_skipped", "unreadable_skipped",
                 "rejected_skipped")


def manifest_text(rows: list[dict]) -> str:
    """manifest.csv's text for `rows` (in the order given: sorted by output)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    from ..core.fsutil import write_text_atomic

    write_text_atomic(path, manifest_text(rows))
    return path


def read_manifest(path: Path) -> list[dict]:
    """The rows of a manifest.csv as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

"""One module per annotation format, each with plain `read_*` / `write_*` functions.

`FORMATS` maps the names the CLI accepts (`--from`, `--to`) to those modules.
"""

from . import coco, csv, labelme, voc, wider, yolo

# Each module offers `read(src, *, images=None, issues=None) -> list[Sample]` and
# `write(samples, out, *, overwrite=False, copy_images=True)`.
FORMATS = {
    "labelme": labelme,
    "wider": wider,
    "coco": coco,
    "voc": voc,
    "yolo": yolo,
    "csv": csv,
}

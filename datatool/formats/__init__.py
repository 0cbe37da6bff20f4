"""One module per annotation format, each with plain `read_*` / `write_*` functions.

`labelme` reads and writes one file at a time; the folder-level `read` / `write` of every
other module here (a WIDER txt, a COCO JSON, ...) has its labelme counterpart in
`datatool.dataset`, which walks folders. `datatool.dataset.FORMATS` maps the names the CLI
accepts (`--from`, `--to`) to them.
"""

from . import coco, csv, labelme, voc, wider, yolo  # noqa: F401

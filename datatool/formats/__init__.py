"""One module per annotation format, each with plain `read_*` / `write_*` functions.

`FORMATS` maps the names the CLI accepts (`--from`, `--to`) to those modules.
"""

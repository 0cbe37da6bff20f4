"""The click group class both CLIs (`datatool`, `trainer`) use: library errors -> one clear line."""

from __future__ import annotations

import click

from .errors import DatatoolError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FacekitGroup(click.Group):
    """A click group that turns library errors into `Error: <message>` and exit code 1."""

    def invoke(self, ctx):
        from . import tfquiet

        tfquiet.install()
        try:
            return super().invoke(ctx)
        except DatatoolError as e:
            raise click.ClickException(str(e)) from e
        except OSError as e:
            if getattr(e, "filename", None):
                raise click.ClickException(f"{e.filename}: {e.strerror or e}") from e
            raise
        except MemoryError as e:
            raise click.ClickException("out of memory (try fewer --workers or a smaller --max-side)") from e

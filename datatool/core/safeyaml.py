"""YAML as plain data, with the expansion of aliases bounded (no "billion laughs")."""

from __future__ import annotations

from pathlib import Path

from .errors import DatatoolError

MAX_YAML_NODES = 100_000  # a large recipe has a few thousand; a "billion laughs" file has 10**9


def _bounded_loader(path, error: type[DatatoolError]):
    """A `yaml.SafeLoader` that refuses, while composing (before anything is built), a document
    whose aliases expand it past `MAX_YAML_NODES` nodes or that refers to itself.

    Written here because PyYAML has no such bound: `safe_load` shares one object per anchor, so
    a "billion laughs" file loads in kilobytes and then takes gigabytes to hash, walk or copy.
    Each node's expanded size is counted once (1 + its children's); an alias adds the size of
    the node it names.
    """
    import yaml

    class BoundedSafeLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._expanded: dict[int, int] = {}

        def compose_node(self, parent, index):
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            size = self._expanded.get(id(node))
            if size is None:
                if alias:  # the anchored node is still being composed: it contains its own alias
                    raise error(f"{path}: YAML alias refers to a node that contains it "
                                f"(line {node.start_mark.line + 1}): recursive structures are refused")
                if isinstance(node, yaml.SequenceNode):
                    children = node.value
                elif isinstance(node, yaml.MappingNode):
                    children = [n for pair in node.value for n in pair]
                else:
                    children = ()
                size = 1 + sum(self._expanded[id(c)] for c in children)
                self._expanded[id(node)] = size
            if size > MAX_YAML_NODES:
                raise error(f"{path}: YAML aliases expand it to more than {MAX_YAML_NODES} nodes "
                            f"(line {node.start_mark.line + 1}): refusing a 'billion laughs' file")
            return node

    return BoundedSafeLoader


def load_yaml(text: str, *, path: Path | str, error: type[DatatoolError] = DatatoolError):
    """`yaml.safe_load(text)` (plain data: no tag builds a Python object) that raises `error`
    naming `path` for a document nested too deeply or whose aliases expand past
    `MAX_YAML_NODES` nodes. Syntax errors stay `yaml.YAMLError` for the caller to word."""
    import yaml

    try:
        return yaml.load(text, Loader=_bounded_loader(path, error))  # noqa: S506 - a SafeLoader
    except RecursionError as e:
        raise error(f"{path}: not valid YAML: nested too deeply") from e

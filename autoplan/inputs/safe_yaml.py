"""YAML reading with a nesting limit, no Python tags and no duplicate keys, for every
YAML input."""

from __future__ import annotations

from typing import Any

import yaml

# What safe_load_yaml raises on bad text: YAMLError, and, from PyYAML's scalar
# constructors, ValueError / TypeError / AttributeError (a 13th month, `!!float abc`,
# `!!timestamp x`, an integer of over 4300 digits).
YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError)


MAX_YAML_DEPTH = 64


class _NoDuplicateKeys:
    """A constructor mixin: a mapping whose keys are all different."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping whose keys are all different: a device kind, a node group or a
        calibration parameter given twice is an error, not the second one silently.
        (Keys a ``<<`` merge brings in may still be overridden, as YAML says.)"""
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the constructor refuses it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {str(key)[:60]!r}", key_node.start_mark)
        return yaml.constructor.SafeConstructor.construct_mapping(
            self, node, deep=deep)  # type: ignore[arg-type]


class _SafeLoader(_NoDuplicateKeys, yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses collections nested deeper than MAX_YAML_DEPTH,
    before PyYAML's scanner (quadratic in the depth of ``[[[...`` ) or its recursive
    composer (RecursionError) gets there. Aliases are not expanded here, so alias bombs
    stay small; the pydantic models then refuse them at the first wrong type."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _ShippedLoader(_NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The package's own files (hardware data, profiles, topologies): libyaml's parser
    where PyYAML has it (7x faster on a 45 KB kernel profile; every command reads
    several), the same refusal of duplicate keys. Never for a user's file: libyaml
    composes in C, where the nesting limit above cannot apply."""


def yaml_problem(e: BaseException) -> str:
    """``: <what is wrong>`` for a message, where PyYAML says (a duplicate key, ...)."""
    problem = getattr(e, "problem", None)
    return f": {' '.join(str(problem).split())[:120]}" if problem else ""


def safe_load_yaml(text: str, shipped: bool = False) -> Any:
    """``yaml.safe_load`` with a nesting limit and no duplicate keys (no Python tags: a
    SafeLoader); ``shipped``: a file of the package itself (see :class:`_ShippedLoader`)."""
    return yaml.load(text, Loader=_ShippedLoader if shipped else _SafeLoader)  # no Python tags

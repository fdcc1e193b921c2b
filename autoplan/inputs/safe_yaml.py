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

MAX_YAML_BYTES = 1 << 20
"""A user's YAML file (a topology, a profile, host terms, sweep cases): 1 MiB, 18x the
largest shipped profile. PyYAML's pure-Python parser, which the nesting limit needs,
takes about 8 s a MiB here; a file near the 64 MiB read limit would take minutes."""

MAX_YAML_EXPANDED = 4 << 20
"""Characters of a user's YAML document once its aliases are written out (scalars plus
one per collection and item): an anchor reused many times (one long ``description`` in
every ``sources`` item) is small in the file and large in every plan that embeds it."""


class _TooLarge(yaml.YAMLError):
    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def _expanded_size(node: Any, memo: dict[int, int], active: set[int]) -> int:
    """Characters of ``node`` with every alias written out; a node reached again through
    an alias is counted again (memoised by identity: linear in the composed graph)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _TooLarge("an alias refers to a node that contains it (a recursive document)")
    if isinstance(node, yaml.ScalarNode):
        size = len(node.value) + 1
    else:
        active.add(key)
        try:
            items = (node.value if isinstance(node, yaml.SequenceNode)
                     else [n for pair in node.value for n in pair])
            size = 1
            for child in items:
                size += _expanded_size(child, memo, active)
                if size > MAX_YAML_EXPANDED:
                    break
        finally:
            active.discard(key)
    memo[key] = size
    return size


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

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_size(node, {}, set()) > MAX_YAML_EXPANDED:
            raise _TooLarge(f"more than {MAX_YAML_EXPANDED} characters once its aliases "
                            f"are written out")
        return node


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
    if not shipped and len(text) > MAX_YAML_BYTES:
        raise _TooLarge(f"more than {MAX_YAML_BYTES} characters (a user's YAML file is "
                        f"at most 1 MiB)")
    return yaml.load(text, Loader=_ShippedLoader if shipped else _SafeLoader)  # no Python tags

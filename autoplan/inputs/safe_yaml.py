"""YAML reading with a nesting limit and no Python tags, for every YAML input."""

from __future__ import annotations

from typing import Any

import yaml

# What safe_load_yaml raises on bad text: YAMLError, and, from PyYAML's scalar
# constructors, ValueError / TypeError / AttributeError (a 13th month, `!!float abc`,
# `!!timestamp x`, an integer of over 4300 digits).
YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError)


MAX_YAML_DEPTH = 64


class _SafeLoader(yaml.SafeLoader):
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


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with a nesting limit (no Python tags: a SafeLoader)."""
    return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader: no Python tags

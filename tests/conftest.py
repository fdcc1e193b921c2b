"""Shared helpers: cached catalog reads and estimates so the suite stays fast."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
import yaml

from autoplan import estimate
from autoplan.catalog import DEFAULT_ENGINE, catalog_root, load_model, load_topology


@lru_cache(maxsize=None)
def _model_json(name: str) -> dict:
    return json.loads((catalog_root() / "models" / f"{name}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _topology_yaml(name: str) -> dict:
    return yaml.safe_load((catalog_root() / "topologies" / f"{name}.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _estimate(model: str, topology: str, tp: int, pp: int, kw: tuple):
    return estimate(load_model(model), load_topology(topology, None, DEFAULT_ENGINE), tp, pp,
                    **dict(kw))


@pytest.fixture(scope="session")
def model_json():
    """The raw HF config (with ``_autoplan`` metadata) of a shipped model."""
    return _model_json


@pytest.fixture(scope="session")
def topology_yaml():
    """The raw parsed YAML of a shipped topology."""
    return _topology_yaml


@pytest.fixture(scope="session")
def est():
    """``autoplan.estimate`` with its results cached per argument set."""

    def run(model: str, topology: str, tp: int = 1, pp: int = 1, **kw):
        return _estimate(model, topology, tp, pp, tuple(sorted(kw.items())))

    return run

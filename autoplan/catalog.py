"""The shipped catalog: models, topologies, device kinds and default calibration.

In a wheel the catalog sits in ``autoplan/_catalog``; in a checkout (editable install)
it is read from the repository's top-level ``models/``, ``topologies/`` and
``hardware/`` folders.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from autoplan.errors import InputError, first_error
from autoplan.graphs.topology import Topology, build_topology, load_topology_file
from autoplan.inputs.host_terms import HostTerms
from autoplan.inputs.kernels import KernelProfile, load_kernel_profiles
from autoplan.inputs.model import ModelSpec, load_model_file
from autoplan.inputs.names import ENGINES
from autoplan.inputs.reading import path_state, read_text
from autoplan.inputs.safe_yaml import MAX_YAML_BYTES, YAML_ERRORS, safe_load_yaml, yaml_problem
from autoplan.inputs.topology import (
    Calibration,
    DeviceKind,
    EngineFacts,
    EngineRules,
    Network,
    TopologySpec,
)


def catalog_root() -> Path:
    packaged = Path(__file__).resolve().parent / "_catalog"
    if (packaged / "models").is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent


def _dir(name: str) -> Path:
    return catalog_root() / name


def _shipped(path: Path) -> bool:
    """A file of the package's own catalog (not a user's)."""
    try:
        return path.resolve().is_relative_to(catalog_root().resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symbolic-link loop (Python < 3.13)
        return False


def list_models() -> list[str]:
    """Hugging Face ids of the shipped models, sorted."""
    root = _dir("models")
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.json"))


def list_topologies() -> list[str]:
    return sorted(p.stem for p in _dir("topologies").glob("*.yaml"))


def load_model(name_or_path: str) -> ModelSpec:
    """A shipped model by HF id, a ``config.json`` path, or a folder holding one (a
    Hugging Face snapshot folder)."""
    p = Path(name_or_path)
    state = path_state(p)
    if state == "folder":
        if path_state(p / "config.json") == "missing":
            raise InputError(f"model config file {name_or_path!r} is a directory without "
                             f"config.json")
        p, state = p / "config.json", "file"
    if p.suffix == ".json" or state != "missing":  # a path: the read names what it is
        return load_model_file(p)
    return _load_shipped_model(name_or_path)


def is_shipped_model(model: ModelSpec) -> bool:
    """The catalog's model of that name, unchanged (a plan then records only the name)."""
    try:
        return model.name in list_models() and _load_shipped_model(model.name) == model
    except InputError:
        return False


def is_shipped_topology(topo: Topology) -> bool:
    """The catalog's topology of that name, unchanged."""
    f = _dir("topologies") / f"{topo.name}.yaml"
    if "/" in topo.name or path_state(f) != "file":
        return False
    try:
        return _read_topology_spec(f) == topo.spec
    except InputError:
        return False


def _read_topology_spec(path: Path) -> TopologySpec:
    try:
        return TopologySpec.model_validate(_read_yaml(path))
    except ValidationError as e:
        raise InputError(f"topology {str(path)!r}: {first_error(e)}") from None


def topology_spec(name_or_path: str) -> TopologySpec:
    """The spec of a shipped topology or a YAML file (nothing built)."""
    return _read_topology_spec(_topology_path(name_or_path))


def topology_from_spec(spec: TopologySpec, profile: dict[str, Calibration] | None = None,
                       engine: str | None = None,
                       host_terms: HostTerms | None = None) -> Topology:
    """A topology from its spec (as a plan embeds it), with the catalog's device kinds;
    ``host_terms`` replace the engine's shipped ones (:func:`with_host_terms`)."""
    cal = dict(engine_calibrations(engine))
    cal.update(profile or {})
    topo = build_topology(spec, builtin_device_kinds(), cal)
    return topo if host_terms is None else with_host_terms(topo, host_terms)


def with_host_terms(topo: Topology, terms: HostTerms) -> Topology:
    """``topo`` with the engine's host terms (``host_step_s``, ``request_overhead_s``)
    replaced on every kind its engine prices (one engine prices a topology), and where
    they come from in ``host_fitted_to``."""
    update = {"host_step_s": terms.host_step_s, "request_overhead_s": terms.request_overhead_s,
              "host_fitted_to": terms.fitted_to or "given (--host-terms)"}
    cals = {}
    for k in topo.kind_names:
        cal = topo.kinds[k].calibration
        if cal is not None and cal.engine is not None:
            cals[k] = cal.model_copy(update={"engine": cal.engine.model_copy(update=update)})
    return topo.with_calibration(cals)


@lru_cache(maxsize=64)
def _load_shipped_model(name: str) -> ModelSpec:
    f = _dir("models") / f"{name}.json"
    if "/" not in name or ".." in name or path_state(f) != "file":
        raise InputError(f"unknown model {name!r}; see `autoplan models` or pass a config.json path")
    return load_model_file(f, name=name)


@lru_cache(maxsize=1)
def builtin_device_kinds() -> dict[str, DeviceKind]:
    data = _read_yaml(_dir("hardware") / "device_kinds.yaml")
    try:
        return {k: DeviceKind.model_validate(v) for k, v in data["device_kinds"].items()}
    except (ValidationError, KeyError, AttributeError) as e:
        raise InputError(f"hardware/device_kinds.yaml: {first_error(e)}") from None


@lru_cache(maxsize=1)
def default_calibrations() -> dict[str, Calibration]:
    """The roofline calibration of every kind (``hardware/calibration.yaml``, fitted to the
    2023 end-to-end rows): what prices a kind without kernel data, and plans made before
    engine profiles (no ``inputs.engine``)."""
    return load_profile(_dir("hardware") / "calibration.yaml")


DEFAULT_ENGINE = "vllm"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    return engine


@lru_cache(maxsize=1)
def engine_facts() -> dict[str, EngineFacts]:
    """Fusions and host time of each engine (``hardware/engines.yaml``)."""
    data = _read_yaml(_dir("hardware") / "engines.yaml")
    try:
        return {k: EngineFacts.model_validate({"name": k, **v})
                for k, v in data["engines"].items()}
    except (ValidationError, KeyError, AttributeError, TypeError) as e:
        raise InputError(f"hardware/engines.yaml: {first_error(e)}") from None


@lru_cache(maxsize=1)
def engine_rules() -> dict[str, EngineRules]:
    """The shape rules of each engine (``hardware/engine_rules.yaml``)."""
    data = _read_yaml(_dir("hardware") / "engine_rules.yaml")
    try:
        return {k: EngineRules.model_validate({"name": k, **v})
                for k, v in data["engines"].items()}
    except (ValidationError, KeyError, AttributeError, TypeError) as e:
        raise InputError(f"hardware/engine_rules.yaml: {first_error(e)}") from None


def uniform_tp(engine: str | None) -> bool:
    """Pipelines run by ``engine`` use one TP degree on their GPU stages (None: free)."""
    if engine is None:
        return False
    rules = engine_rules().get(check_engine(engine))
    return bool(rules and rules.uniform_tp)


@lru_cache(maxsize=8)
def engine_kernels(engine: str) -> dict[str, KernelProfile]:
    """The measured-kernel profiles of one engine, per device kind
    (``hardware/profiles/<engine>.yaml``)."""
    return load_kernel_profiles(_dir("hardware") / "profiles" / f"{check_engine(engine)}.yaml",
                                shipped=True)


@lru_cache(maxsize=8)
def engine_calibrations(engine: str | None) -> dict[str, Calibration]:
    """Calibration of every built-in kind under ``engine`` (None: the roofline profile).

    A kind with kernel data of the engine gets them; a kind naming ``kernels_like`` borrows
    that kind's (its ``source`` says so); any other kind keeps its roofline calibration.
    """
    base = default_calibrations()
    if engine is None:
        return base
    kernels = engine_kernels(engine)
    facts = engine_facts()[check_engine(engine)]
    out = dict(base)
    for name, kind in builtin_device_kinds().items():
        src = name if name in kernels else kind.kernels_like
        if src not in kernels:
            cal = base.get(name) or base.get(kind.calibrate_like or "h100-sxm")
            if cal is None:
                continue
            of = f", of {kind.calibrate_like}" if name not in base else ""
            if kind.own_runtime:
                why = "a chip of its own vendor runtime, which GPU engines do not run"
            else:
                why = f"no {engine} kernel data for {name}"
            out[name] = cal.model_copy(update={
                "source": f"roofline calibration (hardware/calibration.yaml{of}): {why}"})
            continue
        cal = base.get(name) or base.get(kind.calibrate_like or "h100-sxm")
        assert cal is not None, name
        k = kernels[src]
        note = f"{engine} {k.engine_version} kernels of {src}"
        if src != name:
            note += f" (borrowed: {name} has no kernel data of its own)"
        out[name] = cal.model_copy(update={"kernels": k, "engine": facts, "source": note})
    return out


def prior_path() -> Path:
    return _dir("hardware") / "prior.yaml"


def list_profiles() -> list[str]:
    """Names of the shipped calibration profiles (``--profile NAME``): ``default``
    (``hardware/calibration.yaml``) and one per engine in ``hardware/profiles/``
    (``vllm``, ``sglang`` and ``trtllm`` there are the engines' kernel profiles, taken
    with ``--engine``, not calibration profiles)."""
    return ["default"] + sorted(p.stem for p in (_dir("hardware") / "profiles").glob("*.yaml")
                                if p.stem not in ENGINES)


def profile_path(name_or_path: str | Path) -> Path:
    """The file of a profile given as a YAML path or a shipped profile name."""
    p = Path(name_or_path)
    state = path_state(p)
    if state in ("file", "other") or (state == "folder" and "/" in str(name_or_path)):
        return p  # a path (the read says what it is if not a regular file)
    name = str(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name or "\\" in name:
        raise InputError(f"profile file {name!r} does not exist")
    f = (_dir("hardware") / "calibration.yaml" if name == "default"
         else _dir("hardware") / "profiles" / f"{name}.yaml")
    if path_state(f) != "file":
        if state == "folder":
            raise InputError(f"profile {name!r} is a directory; give a profile YAML or a "
                             f"shipped name ({', '.join(list_profiles())})")
        raise InputError(f"unknown profile {name!r}; shipped profiles: "
                         f"{', '.join(list_profiles())}, or pass a YAML path")
    return f


def _read_profile(name_or_path: str | Path) -> tuple[dict, str]:
    path = profile_path(name_or_path)
    data = _read_yaml(path)
    engine = data.get("engine")
    if engine is not None and not (isinstance(engine, str) and engine):
        raise InputError(f"profile {str(name_or_path)!r}: 'engine' must be a non-empty string")
    return data, str(name_or_path)


def load_profile(path: str | Path) -> dict[str, Calibration]:
    """A calibration profile, by YAML path or shipped name (``list_profiles``):
    ``device_kinds: {kind: {parameter: value}}``, with optional top-level ``profile``
    and ``engine`` keys (see ``profile_engine``)."""
    data, shown = _read_profile(path)
    kinds = data.get("device_kinds")
    if not isinstance(kinds, dict):
        raise InputError(f"profile {shown!r} needs a 'device_kinds' mapping")
    try:
        return {k: Calibration.model_validate(v) for k, v in kinds.items()}
    except ValidationError as e:
        raise InputError(f"profile {shown!r}: {first_error(e)}") from None


def profile_engine(path: str | Path) -> str | None:
    """The serving engine a profile was fitted to (its ``engine`` key), or None for a
    profile fitted to several engines' rows."""
    return _read_profile(path)[0].get("engine")


def load_topology(name_or_path: str, profile: dict[str, Calibration] | None = None,
                  engine: str | None = None, nodes: int | None = None,
                  network: str | None = None, host_terms: HostTerms | None = None) -> Topology:
    """A shipped topology by name, or a YAML path, priced for ``engine`` (None: the
    roofline calibration); ``profile`` overrides calibration per kind; ``nodes`` copies
    a single-node topology over a network (:func:`cluster_spec`); ``host_terms``
    replace the engine's shipped ones (:func:`with_host_terms`)."""
    if nodes is not None or network is not None:
        spec = cluster_spec(topology_spec(name_or_path), 1 if nodes is None else nodes, network)
        return topology_from_spec(spec, profile, engine, host_terms)
    cal = dict(engine_calibrations(engine))
    cal.update(profile or {})
    topo = load_topology_file(_topology_path(name_or_path), builtin_device_kinds(), cal)
    return topo if host_terms is None else with_host_terms(topo, host_terms)


def _topology_path(name_or_path: str) -> Path:
    """The file a topology argument names: a YAML path, or a shipped topology's file."""
    p = Path(name_or_path)
    state = path_state(p)
    if (p.suffix in (".yaml", ".yml") or state in ("file", "other")
            or (state == "folder" and "/" in name_or_path)):  # a path
        if state in ("missing", "folder"):
            raise InputError(f"topology file {name_or_path!r} "
                             + ("is a directory" if state == "folder" else "does not exist"))
        return p  # "other" (a FIFO, a long name): the read names what it is
    f = _dir("topologies") / f"{name_or_path}.yaml"
    if state == "folder" and path_state(f) != "file":
        raise InputError(f"topology {name_or_path!r} is a directory; give a topology YAML "
                         "or a shipped name (`autoplan topologies`)")
    if "/" in name_or_path or path_state(f) != "file":
        raise InputError(
            f"unknown topology {name_or_path!r}; see `autoplan topologies` or pass a YAML path"
        )
    return f


def _read_yaml(path: Path) -> dict:
    shipped = _shipped(path)
    text = read_text(path, "file", None if shipped else MAX_YAML_BYTES)  # a regular file, bounded
    try:
        data = safe_load_yaml(text, shipped=shipped)
    except YAML_ERRORS as e:
        raise InputError(f"{str(path)!r} is not valid YAML{yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} must be a YAML mapping")
    return data


MAX_NODES = 4096


def cluster_spec(spec: TopologySpec, nodes: int, network: str | None = None) -> TopologySpec:
    """``nodes`` copies of a single-node topology joined by a scale-out network: a named one
    of ``hardware/networks.yaml``, or the default of the node's device kind there."""
    if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= MAX_NODES:
        raise InputError(f"--nodes must be an integer from 1 to {MAX_NODES}, got {nodes!r}")
    if len(spec.nodes) != 1 or spec.nodes[0].count != 1 or spec.networks:
        raise InputError(f"--nodes replicates a single-node topology; {spec.name!r} already has "
                         f"{sum(g.count for g in spec.nodes)} nodes")
    group = spec.nodes[0]
    if nodes == 1 and network is None:
        return spec
    data = _read_yaml(_dir("hardware") / "networks.yaml")
    nets, defaults = data.get("networks", {}), data.get("defaults", {})
    name = defaults.get(group.devices.kind) if network is None else network
    if name is None:
        raise InputError(f"no default network for {group.devices.kind!r}; pick one with "
                         f"--network ({', '.join(sorted(nets))})")
    if name not in nets:  # named but unused (one node) is still a typo to report
        raise InputError(f"unknown network {name!r}; use one of {', '.join(sorted(nets))}")
    if nodes == 1:
        return spec
    try:
        net = Network.model_validate({"name": "net", **nets[name]})
    except ValidationError as e:
        raise InputError(f"hardware/networks.yaml: {first_error(e)}") from None
    try:  # validated whole: the copies must keep the bounds a topology file is held to
        return TopologySpec.model_validate({
            **spec.model_dump(), "name": f"{spec.name}-{nodes}node",
            "networks": [net.model_dump()],
            "description": f"{nodes} x ({spec.description or spec.name}) on {name}",
            "nodes": [{**group.model_dump(), "count": nodes}]})
    except ValidationError as e:
        raise InputError(f"{spec.name!r} --nodes {nodes}: {first_error(e)}") from None


def list_networks() -> list[str]:
    return sorted(_read_yaml(_dir("hardware") / "networks.yaml").get("networks", {}))

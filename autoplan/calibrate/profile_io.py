"""Write calibration profiles (the YAML that ``--profile`` and the catalog read)."""

from __future__ import annotations

import shlex

import yaml

from autoplan.inputs.topology import Calibration

HEADER = """\
# Calibration profile: the named cost-model parameters of each device kind
# (autoplan/inputs/topology.py:Calibration), fitted by `autoplan calibrate` (least squares on
# log(predicted / measured), bounded, with a weak pull toward the prior) to the rows of
#   {data}{only}
# Refit with:
#   {command}
"""


def comment_text(text: str) -> str:
    """``text`` for one YAML comment line: a character that is not printable (a newline in
    a file name would end the comment and add YAML of its own) is written as its escape."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def calibrate_command(measurements: str, out: str, *, engine: str | None = None,
                      topology: str | None = None, prior: str | None = None,
                      host_terms: bool = False) -> str:
    """The `autoplan calibrate` command line that writes ``out`` (options that change
    the profile only, in a fixed order, so that a refit reproduces the header;
    ``host_terms``: the fit of a ``--host-terms`` file)."""
    args = ["autoplan", "calibrate", measurements] + (["--host-terms"] if host_terms else [])
    for flag, value in (("--engine", engine), ("--topology", topology), ("--prior", prior)):
        if value:
            args += [flag, value]
    return shlex.join(args + ["-o", out])


def profile_yaml(cals: dict[str, Calibration], data: str, command: str,
                 engine: str | None = None) -> str:
    """The profile YAML: ``profile: fitted``, ``engine`` (when the fit used one engine's
    rows) and ``device_kinds``, values to 4 significant digits."""
    body: dict = {"profile": "fitted"}
    if engine:
        body["engine"] = engine
    body["device_kinds"] = {}
    for kind in sorted(cals):
        d = cals[kind].model_dump(exclude={"source", "kernels", "engine"})
        body["device_kinds"][kind] = {k: _sig(v) for k, v in d.items()}
        body["device_kinds"][kind]["source"] = cals[kind].source or f"fitted to {data}"
    only = f" (engine {engine} only)" if engine else ""
    return (HEADER.format(data=comment_text(data), only=comment_text(only),
                          command=comment_text(command))
            + yaml.safe_dump(body, sort_keys=False))


def host_terms_yaml(terms: dict, command: str) -> str:
    """A ``--host-terms`` file (:mod:`autoplan.inputs.host_terms`): the command that
    fitted it, then the terms of each engine (``HostTerms`` by engine name)."""
    import yaml

    body = {"host_terms": {e: t.model_dump() for e, t in terms.items()}}
    head = ["# Host terms of a serving deployment (autoplan/inputs/host_terms.py), fitted by:",
            f"#   {comment_text(command)}",
            "# Use: autoplan estimate|plan|pareto ... --host-terms THIS_FILE"]
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, width=120)

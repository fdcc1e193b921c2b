"""A deployment's own host terms: the two end-to-end parameters of an engine
(``host_step_s``, ``request_overhead_s``; hardware/engines.yaml) fitted to the TTFT and
TPOT rows a user measured on their own serving stack.

The shipped terms are fitted to published rows of each engine. A deployment's HTTP
front, chat template, tokenizer, proxy or scheduler settings may cost more or less: the
held-out rows of hardware/data/heldout-engines.csv show 40-45 ms more request handling on
one vLLM stack than on the fitting source's. ``autoplan calibrate ROWS.csv --host-terms
-o FILE`` writes the fit; ``--host-terms FILE`` on ``estimate``, ``plan`` and ``pareto``
prices with it in place of the shipped terms, and a plan records the values
(``inputs.host_terms``), so ``validate``, ``explain`` and ``export`` reproduce them.

File format (YAML)::

    host_terms:
      vllm:                       # an engine: vllm, sglang or trtllm
        host_step_s: 0.00041      # host time of every forward pass, seconds
        request_overhead_s: 0.05  # the server's handling of one request, seconds
        fitted_to: rows e01, e02 of my-rows.csv   # optional: where the values come from
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoplan.errors import InputError, first_error
from autoplan.inputs.names import ENGINES, check_name

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class HostTerms(BaseModel):
    """One engine's host terms (the bounds of hardware/engines.yaml's fields)."""

    model_config = _STRICT
    host_step_s: float = Field(ge=0, le=1, description="host time of every forward pass "
                               "(scheduler, sampling, graph launch), seconds")
    request_overhead_s: float = Field(ge=0, le=10, description="the server's handling of "
                                      "one request before its first token streams back, "
                                      "seconds (in the TTFT of served requests)")
    fitted_to: str = Field(default="", max_length=4000, description="the rows the values "
                           "were fitted to (printable text: it is printed with the figures)")

    @field_validator("fitted_to")
    @classmethod
    def _printable(cls, v: str) -> str:
        return check_name(v, 4000) if v else v


def load_host_terms(path: str | Path) -> dict[str, HostTerms]:
    """The host terms of a ``--host-terms`` file, by engine (a regular file of bounded
    size, safe YAML; one-line errors)."""
    from autoplan.inputs.reading import read_text, show
    from autoplan.inputs.safe_yaml import MAX_YAML_BYTES, YAML_ERRORS, safe_load_yaml, yaml_problem

    p = Path(path)
    text = read_text(p, "host terms", MAX_YAML_BYTES)
    try:
        doc = safe_load_yaml(text)
    except YAML_ERRORS as e:
        raise InputError(f"host terms {show(p)} are not valid YAML{yaml_problem(e)}") from None
    if not isinstance(doc, dict) or set(doc) != {"host_terms"} or not isinstance(
            doc["host_terms"], dict) or not doc["host_terms"]:
        raise InputError(f"host terms {show(p)}: expected one key 'host_terms' mapping "
                         f"engines ({', '.join(ENGINES)}) to their terms")
    out = {}
    for engine, block in doc["host_terms"].items():
        if engine not in ENGINES:
            raise InputError(f"host terms {show(p)}: unknown engine {str(engine)[:40]!r} "
                             f"(known: {', '.join(ENGINES)})")
        if not isinstance(block, dict):
            raise InputError(f"host terms {show(p)}: {engine}: expected a mapping of "
                             "host_step_s and request_overhead_s")
        try:
            out[engine] = HostTerms.model_validate(block)
        except ValueError as e:
            raise InputError(f"host terms {show(p)}: {engine}: {first_error(e)}") from None
    return out


def engine_host_terms(path: str | Path, engine: str | None) -> HostTerms:
    """The terms of ``engine`` in a ``--host-terms`` file (an error names what is missing)."""
    from autoplan.inputs.reading import show

    terms = load_host_terms(path)
    if engine is None:
        raise InputError("--host-terms prices an engine's host time: it needs --engine "
                         f"{'|'.join(ENGINES)}, not the roofline calibration")
    if engine not in terms:
        raise InputError(f"host terms {show(path)} have no terms for engine {engine} (only "
                         f"{', '.join(sorted(terms))})")
    return terms[engine]

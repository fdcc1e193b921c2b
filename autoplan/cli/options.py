"""The flags the commands share, defined once: the same name, help, metavar, choices and
default wherever a flag appears (``--osl`` is 256 in every command and in the API).

Enumerations are click choices (``--help`` lists them; a wrong value is one line, exit 2).
Metavars name what a value is (``TOKENS``, ``MS``, ``NAME|PATH``), not its Python type.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

import typer

try:  # typer >= 0.24 vendors click as typer._click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions  # noqa: F401

# Annotations of the enumerated flags: typer makes a Literal a choice.
DType = Literal["bf16", "fp16", "fp8", "int8", "int4"]
Objective = Literal["latency", "throughput", "devices"]
Placement = Literal["auto", "colocated", "disaggregated"]
Engine = Literal["vllm", "sglang", "trtllm", "none"]
DTYPES, OBJECTIVES, PLACEMENTS, ENGINES = (get_args(x) for x in (DType, Objective, Placement,
                                                                  Engine))
KV_DTYPES = DTYPES

# What each objective's value means, printed with it.
OBJECTIVE_MEANING = {
    "latency": "end-to-end latency of one request, lower is better",
    "throughput": "output tokens per second the devices sustain, higher is better",
    "devices": "devices needed to serve the request rate, fewer is better",
}

DEFAULT_ISL = 2048
DEFAULT_OSL = 256  # one default for estimate, plan, pareto, sweep and the Python API


MODEL = typer.Option(..., "--model", metavar="MODEL",
                     help="HF id of a shipped model (autoplan models) or a config.json path")

TOPOLOGY = typer.Option(..., "--topology", metavar="NAME|PATH",
                        help="shipped topology (autoplan topologies) or a topology YAML path")

ISL = typer.Option(DEFAULT_ISL, "--isl", metavar="TOKENS",
                   help="input (prompt) tokens per request")

OSL = typer.Option(DEFAULT_OSL, "--osl", metavar="TOKENS",
                   help="output (generated) tokens per request")

BATCH = typer.Option(1, "--batch", metavar="N", help="sequences decoded together per replica")

PREFILL_BATCH = typer.Option(None, "--prefill-batch", metavar="N",
                             help="prompts prefilled together (default: --batch)")

PLAN_BATCH = typer.Option(None, "--batch", metavar="N",
                          help="sequences decoded together per replica (default: 1 for "
                          "latency plans; the throughput and devices objectives choose it)")

PLAN_PREFILL_BATCH = typer.Option(None, "--prefill-batch", metavar="N",
                                  help="prompts prefilled together (default: --batch for "
                                  "latency plans; the throughput and devices objectives "
                                  "choose it)")

DTYPE = typer.Option(None, "--dtype", show_default=False,
                     help="weight and GEMM format (activations stay 16-bit): "
                          + ", ".join(DTYPES) + " (default: the checkpoint's format, from "
                          "its config's quantization_config; bf16 without one)")

KV_DTYPE = typer.Option(None, "--kv-dtype",
                        help="KV-cache format (default: --dtype for bf16/fp16/fp8, else bf16; "
                             "without --dtype, the checkpoint's: its 16-bit activations "
                             "unless its config quantizes the cache)")

OBJECTIVE = typer.Option("latency", "--objective",
                         help="latency: fastest request; throughput: most tokens/s on the "
                              "devices; devices: fewest devices for --request-rate")

PLACEMENT = typer.Option("auto", "--placement",
                         help="colocated: prefill and decode on the same devices; "
                              "disaggregated: separate pools with a KV hand-off; auto: the "
                              "better of both")

MAX_MEMORY_FRACTION = typer.Option(0.9, "--max-memory-fraction", metavar="FRACTION",
                                   help="usable fraction of each device's memory (0-1]")

TIME_LIMIT_S = typer.Option(30.0, "--time-limit-s", metavar="SECONDS", help="solver time limit")

NODES = typer.Option(None, "--nodes", metavar="N",
                     help="copies of a single-node topology joined by a network "
                          "(e.g. --topology h200-x8 --nodes 2)")

NETWORK = typer.Option(None, "--network", metavar="NAME",
                       help="network joining --nodes (hardware/networks.yaml; default: the "
                            "node's NIC)")

ENGINE = typer.Option("vllm", "--engine",
                      help="serving engine whose measured kernels price the figures; none: "
                           "the 2023 roofline calibration")

PROFILE = typer.Option(None, "--profile", metavar="NAME|PATH",
                       help="calibration profile: a shipped name (default, trtllm-0.5, "
                            "splitwise-sim, groq, gpt-fast, ...) or a profile YAML; it "
                            "overrides --engine's figures for the device kinds it covers")

HOST_TERMS = typer.Option(None, "--host-terms", metavar="FILE",
                          help="the engine's host terms (per-step host time, per-request "
                               "server time) from a deployment's own rows, in place of the "
                               "shipped ones: autoplan calibrate ROWS.csv --host-terms -o FILE")

JSON = typer.Option(False, "--json", help="print JSON instead of tables")


def host_terms_of(path: str | None, engine: str | None):
    """The --host-terms file's terms for the engine in use (None: not given)."""
    if path is None:
        return None
    from autoplan.inputs.host_terms import engine_host_terms

    return engine_host_terms(path, engine)


def version_callback(value: bool) -> None:
    if value:
        import sys

        typer.echo(f"autoplan {sys.modules['autoplan'].__version__}")
        raise typer.Exit()


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Plan how to split an LLM across devices, and predict its latency.",
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=version_callback,
                                 is_eager=True, help="print the version and exit"),
) -> None:
    """Plan how to split an LLM across devices, and predict its latency."""




def _argument_type_hidden() -> None:
    """typer prints a positional argument's Python type after its metavar (``PLAN.json
    <str>``); the metavar already names the value."""
    from typer.core import TyperArgument

    TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


_argument_type_hidden()


def show_rows(rows, paths, table, as_json: bool) -> None:
    """A sweep's rows: as JSON, or as ``table`` prints them and the files written."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table(rows)
        for p in paths:
            typer.echo(str(p))

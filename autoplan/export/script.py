"""The ``launch.sh`` of the shell engines (vLLM, SGLang): one ``case`` group a host.

A shell builder gives its commands as rows (group, comment lines, command): the group is
the host that runs the command (``unpinned`` where the plan names none), and the script
runs a group's commands when called with that group's name.
"""

from __future__ import annotations

import shlex

from autoplan.export.common import HOST_IP, Command, Ctx, Export, comment
from autoplan.export.pools import Pool

FILE = "launch.sh"
UNPINNED = ("not pinned: run it on a host you pick, with its visible devices set (the "
            "router/proxy line calls that host HOST)")

Row = tuple[str, list[str], Command]


def one_host_row(pool: Pool, r: int, argv: list[str], env: dict[str, str]) -> tuple[Row, str]:
    """The row of replica ``r`` where it runs on one host, or on none the plan names, and
    the host its server is reached on (``HOST`` for an unpinned one)."""
    hosts = pool.replica_hosts[r]
    if hosts is None:
        return ("unpinned", [pool.title(r), UNPINNED],
                Command(pool.role, argv, env, None, r)), "HOST"
    host, idx = hosts[0]
    return (host, [pool.title(r)],
            Command(pool.role, argv, {**pool.visible(idx), **env}, host, r)), host


def launch_script(ctx: Ctx, rows: list[Row], extra: list[Command], notes: list[str],
                  sources: tuple[str, ...]) -> Export:
    """The export of a shell engine: ``rows`` by host, then ``extra`` (routers) in groups of
    their own; ``notes`` are header lines, ``sources`` the pages that document the flags."""
    return Export(ctx.engine, {FILE: _script(ctx, rows, extra, notes, sources)}, ctx.warn,
                  [c for _, _, c in rows] + extra)


def _script(ctx: Ctx, rows: list[Row], extra: list[Command], notes: list[str],
            sources: tuple[str, ...]) -> str:
    """The script text. Plan text reaches it in two places only: comment lines (through
    :func:`~autoplan.export.common.comment`, one line each) and shell words (quoted by
    ``shlex``); nothing of the plan is ever shell syntax."""
    p = ctx.plan
    blocks: dict[str, list[str]] = {}
    for block, comments, cmd in rows:
        lines = blocks.setdefault(block, [])
        lines += [f"# {comment(c)}" for c in comments]
        daemon = cmd.role.startswith("ray-")
        lines.append(cmd.line() + ("" if daemon else " &"))
    for cmd in extra:
        blocks.setdefault(cmd.role, []).append(cmd.line() + " &")
    labels = list(blocks)
    head = [
        "#!/usr/bin/env bash",
        (f"# autoplan export --to {ctx.engine}: {p.inputs.model} on {p.inputs.topology}, "
        f"{p.placement}"),
        (f"# isl {p.inputs.isl}, osl {p.inputs.osl}, batch {p.inputs.batch}, dtype "
        f"{p.inputs.dtype}, KV {p.inputs.kv_dtype}; plan TTFT {p.ttft_ms:.2f} ms, "
        f"TPOT {p.tpot_ms:.3f} ms"),
        f"# Usage: {FILE} GROUP, on the host of that group; groups: {' '.join(labels)}",
        "# Host names are the topology's node names; they must resolve on every host.",
        "# Flags documented at:",
        *[f"#   {u}" for u in sources],
    ]
    head += [f"# WARNING: {w}" for w in ctx.warn]
    head += [f"# {n}" for n in notes]
    head = [head[0]] + [comment(h) for h in head[1:]]
    head += ["set -euo pipefail"]
    default = labels[0] if len(labels) == 1 else ""
    if shlex.quote(default) in (default, "''"):  # nothing to expand in it
        head.append(f'GROUP="${{1:-{default}}}"')
    else:
        head += [f"DEFAULT_GROUP={shlex.quote(default)}", 'GROUP="${1:-$DEFAULT_GROUP}"']
    if any(HOST_IP in c.env.values() for _, _, c in rows):
        head.append("HOST_IP=\"${HOST_IP:-$(hostname -I | awk '{print $1}')}\"  "
                    "# address the KV-transfer side channel listens on")
    body = ['case "$GROUP" in']
    for label in labels:
        body.append(f"  {shlex.quote(label)})")
        body += [f"    {line}" for line in blocks[label]]
        body.append("    ;;")
    known = " ".join(labels)
    body.append(f"  *) echo {shlex.quote(f'{FILE}: unknown group ')}\"'$GROUP'\""
                f"{shlex.quote(f' (expected one of: {known})')} >&2; exit 2 ;;")
    body.append("esac")
    body.append("wait")
    return "\n".join(head + body) + "\n"

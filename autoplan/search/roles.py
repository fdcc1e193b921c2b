"""Stage roles of the planner's tables: where a stage sits in its pipeline.

A model is ``p`` leading dense layers (DeepSeek-V3's first three dense layers before its
MoE layers; 0 for a uniform model) and ``U`` uniform layers. Stages are counted in
uniform layers (their *length*); the base roles are

- ``only``: the whole model, embedding and LM head (length ``U``);
- ``first``: the embedding, the ``p`` dense layers and ``length`` uniform layers;
- ``mid``: ``length`` uniform layers (priced anywhere in the uniform run: they cost the
  same wherever they sit);
- ``last``: ``length`` uniform layers and the LM head.

Cuts inside the dense run add (latency tables, :func:`roles_for`):

- ``lead:a:b``: dense layers ``a .. b-1`` alone (``0 <= a < b <= p``; ``a == 0`` holds the
  embedding), length 0;
- ``first:j``: dense layers ``j .. p-1`` and ``length`` uniform layers, after leads
  that hold layers ``0 .. j-1`` (``1 <= j <= p``);
- ``only:j``: dense layers ``j .. p-1``, every uniform layer and the LM head.

A pipeline is a chain of leads from layer 0 to some ``j``, then one *body* stage
(``first``/``first:j``, or ``only``/``only:j``), then middles and a ``last`` after a
first. Every stage that does not start at layer 0 receives a hand-off.
"""

from __future__ import annotations

ROLES = ("only", "first", "mid", "last")

MAX_DENSE_CUTS = 12
"""Longest leading dense run the latency tables cut anywhere (``p (p + 1) / 2 + 2 p``
roles: 16 for DeepSeek-V3's 3, 106 for 12). A longer run rides on the first stage, and
the plan says ``feasible`` (``stop_reason: dense_run_limit``, no bound): the cuts inside
it were not searched."""


def roles_for(prefix: int, cuts_in_prefix: bool) -> tuple[str, ...]:
    """The base roles, then (``cuts_in_prefix`` and a dense run) the dense-run cuts in a
    canonical order: leads by (start, end), ``first:j``, ``only:j`` by ``j``."""
    if not cuts_in_prefix or prefix == 0 or prefix > MAX_DENSE_CUTS:
        return ROLES
    leads = tuple(f"lead:{a}:{b}" for a in range(prefix) for b in range(a + 1, prefix + 1))
    return (ROLES + leads + tuple(f"first:{j}" for j in range(1, prefix + 1))
            + tuple(f"only:{j}" for j in range(1, prefix + 1)))


def base(role: str) -> str:
    """``only`` / ``first`` / ``mid`` / ``last`` / ``lead``."""
    return role.split(":", 1)[0]


def start(role: str) -> int:
    """The first layer of a stage of this role before the uniform run (``mid`` and
    ``last`` sit inside it: see :func:`span`)."""
    if ":" not in role:
        return 0
    return int(role.split(":")[1])


def lead_end(role: str) -> int:
    """The layer after a lead stage (``b`` of ``lead:a:b``)."""
    return int(role.split(":")[2])


def dense(role: str, prefix: int) -> int:
    """Dense-run layers a stage of this role holds."""
    b = base(role)
    if b == "lead":
        return lead_end(role) - start(role)
    if b in ("only", "first"):
        return prefix - start(role)
    return 0


def span(role: str, prefix: int, num_layers: int, length: int) -> tuple[int, int]:
    """Layers ``[first, end)`` a stage of this role and length is priced at."""
    b = base(role)
    if b == "last":
        return num_layers - length, num_layers
    if b == "mid":
        # strictly between the stage holding layer 0 and the one holding the LM head
        return prefix + 1, prefix + 1 + length
    s = start(role)
    if b == "only":
        return s, num_layers
    return s, s + dense(role, prefix) + length


def starts_pipeline(role: str) -> bool:
    """A stage of this role holds layer 0 (and the embedding): no hand-off into it."""
    return base(role) in ("only", "first", "lead") and start(role) == 0


def is_body(role: str) -> bool:
    """The stage that holds the first uniform layer."""
    return base(role) in ("only", "first")


def ends_pipeline(role: str) -> bool:
    """A stage of this role holds the LM head."""
    return base(role) in ("only", "last")


def fixed_length(role: str) -> bool:
    """A stage of this role has one length: ``U`` (``only``) or 0 (a lead)."""
    return base(role) in ("only", "lead")

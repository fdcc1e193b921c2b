"""bench/adp_balance.py: attention-DP ranks out of step cost throughput, the more the
more sequences a rank runs (more prompt chunks per step to fall out of step), and never
more than the blog's balanced gain at the batches it prints."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import adp_balance  # noqa: E402


def test_ranks_out_of_step_cost_more_as_the_ranks_fill():
    lines = adp_balance.table(batches=(32, 128, 256))
    ratios = [float(m.group(1)) for ln in lines if (m := re.search(r"\| ([\d.]+)x \|$", ln))]
    assert len(ratios) == 3
    assert 1.0 < ratios[0] < ratios[1] < ratios[2]
    assert ratios[-1] < adp_balance.BLOG["full strategy"] / adp_balance.BLOG["baseline"]

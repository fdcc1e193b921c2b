"""The public Python surface: every command's function from ``import autoplan`` alone."""

from __future__ import annotations

import autoplan


def test_public_surface_chain(tmp_path):
    req = autoplan.Request(model="meta-llama/Llama-3.1-8B", topology="h100-sxm-x8", isl=512,
                           osl=64, objective="throughput", max_devices=4)
    p = autoplan.plan(req)
    assert p == autoplan.plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=512, osl=64,
                              objective="throughput", max_devices=4).model_copy(
        update={"solve_seconds": p.solve_seconds})
    path = tmp_path / "p.json"
    path.write_text(p.model_dump_json())
    loaded = autoplan.Plan.load(path)
    rep = autoplan.validate(loaded)
    assert rep.ok and rep.figures.tpot_ms == p.tpot_ms
    ex = autoplan.explain(loaded, solve=False)
    assert ex.alternatives and all(a.devices is None or a.verdict == "ruled out"
                                   or a.devices <= 4 for a in ex.alternatives)
    files = autoplan.chart(loaded, tmp_path / "charts")
    assert {f.suffix for f in files} == {".png", ".svg"}
    exp = autoplan.export(loaded, "vllm")
    assert "vllm serve meta-llama/Llama-3.1-8B" in next(iter(exp.files.values()))
    assert loaded.phase("decode") is loaded.decode

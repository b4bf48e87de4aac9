"""What `bptt paths` shows."""

from __future__ import annotations

import numpy as np

from bptt_cli.analyses.paths import PathsResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import caption, table, title


def render(o: Output, r: PathsResult) -> None:
    c = r.config
    path_sum = r.contributions.sum(axis=0)  # (B, H)
    o.show(title(f"paths to h_1: what each loss l_s sends back (sequence 1, T={c.seq_len}, H={c.hidden})"))
    o.show(
        table(
            ["loss", "path", "walk length", "||C_s||", "C_s[0]"],
            [
                [f"l_{s + 1}", f"l_{s + 1} -> h_{s + 1} -> ... -> h_1", s, float(np.linalg.norm(v)), float(v[0])]
                for s, v in enumerate(r.contributions[:, 0, :])
            ],
        )
    )
    o.show(title("naive path enumeration vs BPTT recursion"))
    o.show(
        table(
            ["method", "backward walks", "products with W_h", "dL/dh_1[0]"],
            [
                ["naive (every path)", r.naive.paths, r.naive.jvps, float(path_sum[0, 0])],
                ["efficient (recursion)", r.efficient.paths, r.efficient.jvps, float(r.efficient.adjoints[0, 0, 0])],
            ],
        )
    )
    o.show(
        caption(
            f"max |difference| over all gradients and dL/dh_t: {r.max_abs_diff:.3g} (relative {r.max_rel_diff:.3g})"
        )
    )
    if not r.timing:
        return
    o.show(title(f"wall time per gradient (median of {c.repeats})"))
    o.show(
        table(
            ["T", "naive paths", "naive s", "efficient steps", "efficient s", "naive / efficient"],
            [
                [t.seq_len, t.naive_paths, t.naive_s, t.efficient_steps, t.efficient_s, t.naive_s / t.efficient_s]
                for t in r.timing
            ],
        )
    )
    (kn, rn), (ke, re_) = r.exponents["naive"], r.exponents["efficient"]
    o.show(caption(f"fitted time ~ T^k: naive k = {kn:.2f} (r^2 {rn:.3f}), efficient k = {ke:.2f} (r^2 {re_:.3f})"))
    for p in r.plots:
        o.line(f"plot: {p}")

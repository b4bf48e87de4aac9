"""What `bptt gradcheck` shows."""

from __future__ import annotations

from rich.text import Text

from bptt_cli.analyses.gradcheck import GradcheckResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import caption, table, title


def render(o: Output, r: GradcheckResult) -> None:
    c = r.config
    o.show(title(f"gradcheck: {c.activation} RNN, {c.loss} loss, {c.dtype}, T={c.seq_len} B={c.batch} H={c.hidden}"))
    o.show(
        table(
            ["check", "parameter", "relative error", "tolerance", "ok"],
            [[x.check, x.parameter, x.rel_error, x.tolerance, "ok" if x.passed else "FAIL"] for x in r.checks],
        )
    )
    o.show(caption("relative error = ||a - b|| / (||a|| + ||b||) over the compared entries"))
    o.show(Text("all checks passed", style="green") if r.passed else Text("some checks failed", style="red"))

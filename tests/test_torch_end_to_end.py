"""Ground truth end to end (issue 13): a model trained in PyTorch, saved as a state dict, analysed by
`bptt trace --model m.pt --inputs x.npy --targets y.npy --json`; the per-step ||dl_T/dh_t|| of the
top layer equals torch autograd through the module unrolled one step at a time, in both layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from bptt_cli.cli.app import app

torch = pytest.importorskip("torch")
runner = CliRunner()
D, H, V, T, B = 3, 6, 4, 15, 5


def trained(cls, num_layers: int):
    """A small module trained for a few dozen steps, so the weights are not those of the init."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cls(D, H, num_layers=num_layers)
            self.head = torch.nn.Linear(H, V)

    net = Net().double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(40):
        x = torch.tensor(rng.normal(size=(T, B, D)))
        y = torch.tensor(rng.integers(0, V, size=(T, B)))
        out = net.head(net.rnn(x)[0])
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def torch_last_loss_signal(net, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """||dl_T/dh_t|| of the top layer, batch mean, for t = 1..T: the module one step at a time."""
    xs, hx, states = torch.tensor(x), None, []
    for t in range(T):
        out, hx = net.rnn(xs[t : t + 1], hx)
        h = hx[0] if isinstance(hx, tuple) else hx  # (layers, B, H): the next step reads it, not `out`
        h.retain_grad()
        states.append(h)
    logits = net.head(states[-1][-1])  # (B, V): the top layer at T
    # bptt's loss of the last step: the cross-entropy of each sequence, averaged over the batch
    torch.nn.functional.cross_entropy(logits, torch.tensor(y[-1]), reduction="sum").div(B).backward()
    return np.array([h.grad[-1].norm(dim=1).mean().item() for h in states])


@pytest.mark.parametrize(
    ("name", "layers"), [("RNN", 1), ("RNN", 2), ("GRU", 1), ("LSTM", 1), ("LSTM", 2)]
)  # fmt: skip
@pytest.mark.parametrize("batch_first", [False, True])
def test_bptt_trace_equals_torch_autograd_on_the_users_model(tmp_path, name, layers, batch_first):
    net = trained(getattr(torch.nn, name), layers)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(T, B, D)), rng.integers(0, V, size=(T, B))
    np.save(tmp_path / "x.npy", x.swapaxes(0, 1) if batch_first else x)
    np.save(tmp_path / "y.npy", y.swapaxes(0, 1) if batch_first else y)
    args = ["trace", "--model", tmp_path / "m.pt", "--inputs", tmp_path / "x.npy", "--targets", tmp_path / "y.npy"]
    args += ["--activation", "tanh"] if name == "RNN" else []
    args += ["--batch-first"] if batch_first else []
    r = runner.invoke(app, [str(a) for a in args] + ["--json", "-q", "--lyapunov", "0"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert (res["data"]["seq_len"], res["data"]["batch"], res["data"]["loss"]) == (T, B, "xent")
    per_step = res["per_step"]
    top = per_step["parts"].get(f"l{layers - 1}.h", per_step["last"])  # a 1-layer RNN's state is its h
    measured = np.exp(np.asarray(top["ln_mean"], dtype=float))
    assert_allclose(measured, torch_last_loss_signal(net, x, y), rtol=1e-8)

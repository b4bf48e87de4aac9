"""The PyTorch model of docs/pytorch.md: what an engineer brings to bptt, made in a few seconds.

    python -m tools.demo_torch_model [--cell rnn|gru|lstm] [--steps 300] [--batch-first]

Trains `nn.RNN(8, 64)` (or nn.GRU / nn.LSTM) + `nn.Linear(64, 8)` in PyTorch on the recall task
(the target at step t is the symbol seen at t - 10) and saves, in the current folder,
`model.pt` (torch.save(model.state_dict())), `x.npy` (16 held-out sequences, one-hot, time
first unless --batch-first) and `y.npy` (their integer targets).
"""

from __future__ import annotations

import argparse

import numpy as np


def recall_batch(rng: np.random.Generator, T: int, B: int, K: int, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot symbols x (T, B, K) and targets y (T, B): y_t = symbol at t - delay (-100 before it)."""
    s = rng.integers(0, K, size=(T, B))
    x = np.eye(K)[s]
    y = np.full((T, B), -100)
    y[delay:] = s[:-delay]
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-first", action="store_true")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    K, H, T, delay = 8, 64, 30, 10
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[args.cell]

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cls(K, H)
            self.head = torch.nn.Linear(H, K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0])

    net = Net().double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(args.steps):
        x, y = recall_batch(rng, T, 32, K, delay)
        out = net(torch.tensor(x))
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, K), torch.tensor(y).reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), "model.pt")
    x, y = recall_batch(np.random.default_rng(1), T, 16, K, delay)
    y = np.where(y < 0, 0, y)  # bptt's xent scores every step; the first `delay` targets are arbitrary
    if args.batch_first:
        x, y = x.swapaxes(0, 1), y.swapaxes(0, 1)
    np.save("x.npy", x)
    np.save("y.npy", y)
    print(f"wrote model.pt ({args.cell}, trained {args.steps} steps, last loss {loss.item():.3f}), x.npy, y.npy")


if __name__ == "__main__":
    main()

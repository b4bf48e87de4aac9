"""A stacked RNN, GRU or LSTM in PyTorch's layout (core/net.py) as a Cell (core/cells.py).

The state s_t is every layer's state side by side, layer 0 first: [h^0, h^1, ...], or
[h^0, c^0, h^1, c^1, ...] for an LSTM (`state_parts` names the pieces). One step of the
stack maps s_{t-1} to s_t, and layer k at step t reads layer k - 1's h at the same step t, so
its Jacobian J_t = ds_t/ds_{t-1} is block lower triangular: a product J_t Q sweeps the layers
bottom-up (each layer's change of h is the next layer's change of input), a product J_t^T v
top-down (each layer sends an adjoint to the h of the layer below).

BPTT goes layer by layer, top first (core/layers.py): each layer's backward is one sequential
loop over T, and its dL/dx is the adjoint arriving from above for the layer below.

The adjoints are those of the state as one vector (what the trace's recursion
delta_t = dl_t/ds_t + J_{t+1}^T delta_{t+1} computes): dL/ds_t with s_t free and the steps
after t computed from it. For a layer below the top, that is what the steps after t send back
to its h_t and c_t; the layer above reads h_t at step t, but that is inside step t, so it is
not part of dL/ds_t. The loss reads only the top layer's h.
"""

from __future__ import annotations

import numpy as np

from bptt_cli.core import layers as ly
from bptt_cli.core.activations import Activation, get_activation
from bptt_cli.core.bptt import GradResult, NonFiniteError, check_propagate
from bptt_cli.core.cells import Cell, Run, VJPStepper
from bptt_cli.core.losses import XENT, Loss, get_loss, loss_and_grad, xent_columns
from bptt_cli.core.net import LayerParams, NetParams, check_net_params
from bptt_cli.core.rnn import check_sequence_inputs
from bptt_cli.core.validate import check_choice

METHODS = ("efficient", "reference")
TOP_KEEPS, LOWER_KEEPS = frozenset({"dh", "ds_c"}), frozenset({"ds_h", "ds_c"})
KIND_NAMES = {"gru": "GRU", "lstm": "LSTM"}


def check_net_inputs(params: NetParams, x: np.ndarray, s0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate x (T, B, D) and s0 (B, S) against the network; return them in its dtype (s0 zeros when None)."""
    return check_sequence_inputs(
        x,
        s0,
        input_size=params.input_size,
        state_size=params.state_size,
        dtype=params.dtype,
        weight="l0.W_ih",
        state="(B, S)",
        state_note=" (every layer's state)",
    )


def output_loss(
    params: NetParams,
    h: np.ndarray,
    loss: Loss,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    fast: bool = False,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """L, dl_t/dh_t (T, B, H) on the top layer's h, and dW_y, dc.

    Parameters
    ----------
    h : (T + 1, B, H) the top layer's h_0..h_T, C-contiguous
    targets, mask : already checked (Cell.check_batch)
    fast : for core/layers.py's fast backward: the cross-entropy with one column per (t, b)
        (core/losses.py `xent_columns`, the same numbers to rounding), and dl_t/dh_t computed straight
        into the fast kernels' layout (a (T, B, H) view of (T, H, B) memory), one product per step
    """
    T1, B, H = h.shape
    T, N, V = T1 - 1, (T1 - 1) * B, params.output_size
    if not loss.uses_output:  # half-square: 1/2 ||h_t||^2 of the top layer's h
        L, dl = loss_and_grad(loss, h[1:], None, mask)
        return L, dl, np.zeros_like(params.W_y), np.zeros_like(params.c)
    h2 = h[1:].reshape(N, H)  # (T B, H)
    if loss is XENT and fast:
        yT = params.W_y @ h2.T  # (V, T B): one column per (t, b), as xent_columns wants
        yT += params.c[:, None]
        L = xent_columns(yT, targets.reshape(N), B, None if mask is None else mask.reshape(N))
        dy = yT.T  # (T B, V) view
        dy_steps = yT.reshape(V, T, B).transpose(1, 0, 2)  # (T, V, B) view: step t's dL/dy as columns
    else:
        y = h2 @ params.W_y.T  # (T B, V)
        y += params.c
        L, dy3 = loss_and_grad(loss, y.reshape(T, B, V), targets, mask, overwrite=True)
        dy = dy3.reshape(N, V)
        dy_steps = dy3.transpose(0, 2, 1)  # (T, V, B) view
    # back through y_t = W_y h_t + c, every step in one product
    dW_y = dy.T @ h2  # (V, H)
    dc = np.ones(N, dtype=dy.dtype) @ dy  # (V,)
    if fast:
        dl = np.matmul(params.W_y.T, dy_steps).transpose(0, 2, 1)  # (T, B, H) view of (T, H, B)
    else:
        dl = (dy @ params.W_y).reshape(T, B, H)  # (T, B, H)
    return L, dl, dW_y, dc


class NetCell(Cell):
    """A stack of PyTorch RNN, GRU or LSTM layers and a linear output layer (module docstring).

    Parameters
    ----------
    params : NetParams (core/net.py)
    activation : the rnn's nonlinearity ('tanh' | 'relu' | 'identity'); a GRU or an LSTM has fixed
        ones, and takes only the default 'tanh'
    """

    def __init__(self, params: NetParams, activation: str | Activation = "tanh") -> None:
        self._params = check_net_params(params)
        act = get_activation(activation)
        if params.kind != "rnn" and act.name != "tanh":
            raise ValueError(
                f"`activation` {act.name}: a {params.kind.upper()} has fixed nonlinearities (sigmoid gates, "
                "tanh); an activation is for the rnn cell only"
            )
        self.name = params.kind
        self.activation: Activation | None = act if params.kind == "rnn" else None
        self.input_size = params.input_size
        self.hidden_size = params.hidden_size
        self.output_size = params.output_size
        self.state_size = params.state_size
        self.dtype = params.dtype

    @property
    def params(self) -> NetParams:
        return self._params

    @property
    def num_layers(self) -> int:
        return self._params.num_layers

    def with_params(self, params: NetParams) -> NetCell:
        return NetCell(params, self.activation or "tanh")

    def describe(self) -> str:
        p = self._params
        what = f"{self.activation.name} RNN" if p.kind == "rnn" else KIND_NAMES[p.kind]
        return what if p.num_layers == 1 else f"{p.num_layers}-layer {what}"

    def state_parts(self) -> list[tuple[str, slice]]:
        """(name, slice of the state) for every piece: 'l0.h', 'l0.c', 'l1.h', ..."""
        return self._params.state_parts()

    # ------------------------------------------------------------------------ forward

    def _layer_slice(self, k: int) -> slice:
        LS = self._params.layer_state
        return slice(k * LS, (k + 1) * LS)

    def _forward(self, x: np.ndarray, s0: np.ndarray, *, reference: bool = False) -> tuple[ly.LayerRun, ...]:
        """Every layer over the whole sequence, bottom first (validated x, s0)."""
        fwd = ly.forward_reference if reference else ly.forward
        runs, inp = [], x
        act = self.activation or "tanh"
        for k, layer in enumerate(self._params.layers):
            r = fwd(self.name, layer, inp, s0[:, self._layer_slice(k)], act)
            runs.append(r)
            inp = r.h_rows[1:]  # (T, B, H) the next layer's input, C-contiguous
        return tuple(runs)

    def _states(self, runs: tuple[ly.LayerRun, ...]) -> np.ndarray:
        """s_0..s_T (T + 1, B, S) in the network's layout."""
        if len(runs) == 1 and runs[0].c is None:
            return runs[0].h  # the one layer's h is the state: no copy
        T1, B, H = runs[0].h.shape
        states = np.empty((T1, B, self.state_size), dtype=runs[0].h.dtype)  # (T+1, B, S)
        for k, r in enumerate(runs):
            base = self._layer_slice(k).start
            states[:, :, base : base + H] = r.h
            if r.c is not None:
                states[:, :, base + H : base + 2 * H] = r.c
        return states

    def run(self, x: np.ndarray, s0: np.ndarray | None = None) -> Run:
        """The trajectory: states s_0..s_T (T + 1, B, S); the cache holds each layer's LayerRun."""
        x, s0 = check_net_inputs(self._params, x, s0)
        with np.errstate(over="ignore", invalid="ignore"):
            runs = self._forward(x, s0)
        return Run(x=x, states=self._states(runs), cache=runs)

    def hidden(self, run: Run) -> np.ndarray:
        """The top layer's h_0..h_T (T + 1, B, H): what the output layer reads."""
        return run.cache[-1].h

    def outputs(self, run: Run) -> np.ndarray:
        T1, B, H = run.cache[-1].h.shape
        p = self._params
        y = (run.cache[-1].h_rows[1:].reshape((T1 - 1) * B, H) @ p.W_y.T).reshape(T1 - 1, B, p.output_size)  # (T, B, V)
        y += p.c
        return y

    def local_loss(
        self, run: Run, loss: Loss, targets: np.ndarray | None, mask: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        """L and dl_t/ds_t (T, B, S): non-zero only on the top layer's h."""
        L, dl_top, _, _ = output_loss(self._params, run.cache[-1].h_rows, get_loss(loss), targets, mask)
        T, B, H = dl_top.shape
        if self.state_size == H:
            return L, dl_top
        dl = np.zeros((T, B, self.state_size), dtype=dl_top.dtype)  # (T, B, S)
        dl[:, :, self._params.top_hidden()] = dl_top
        return L, dl

    # ------------------------------------------------------------------------ BPTT

    def gradients(
        self,
        x: np.ndarray,
        targets: np.ndarray | None,
        *,
        loss: str | Loss = "xent",
        mask: np.ndarray | None = None,
        h0: np.ndarray | None = None,
        propagate: np.ndarray | None = None,
        method: str = "efficient",
    ) -> GradResult:
        """Loss and exact gradients of the stack by backpropagation through time, layer by layer.

        Parameters
        ----------
        x : (T, B, D) inputs
        targets : (T, B) int class indices for 'xent'; (T, B, V) floats for 'mse'; None for 'half-square'
        loss : 'xent' | 'mse' | 'half-square' (1/2 ||h_t||^2 of the top layer's h)
        mask : (T, B) per-step loss weights, default all ones
        h0 : (B, S) initial state s_0 (every layer's h, and c for an LSTM), default zeros
        propagate : (T,) or (T, B) truncation weights xi (core/bptt.py); None = full BPTT
        method : 'efficient' (core/layers.py's fast kernels) or 'reference' (the readable ones)

        Returns
        -------
        GradResult: grads a NetParams (with bias=False the b arrays are zeros, left out of as_dict),
        dh0 (B, S), adjoints (T, B, S) dL/ds_t, final_state (B, S) s_T.

        Raises
        ------
        ValueError for malformed input; NonFiniteError (a ValueError) when the loss or a gradient
        is NaN or infinite.
        """
        p = self._params
        check_choice("method", method, METHODS)
        lo = get_loss(loss)
        x, s0 = check_net_inputs(p, x, h0)
        T, B, _ = x.shape
        targets, mask = self.check_batch(x, targets, lo, mask)
        propagate = check_propagate(propagate, T, B, p.dtype)
        reference = method == "reference"
        back = ly.backward_reference if reference else ly.backward
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            runs = self._forward(x, s0, reference=reference)
            L, dh, dW_y, dc = output_loss(p, runs[-1].h_rows, lo, targets, mask, fast=not reference)
            grads: list = [None] * p.num_layers  # LayerGrads, filled top first
            # s_0..s_T's adjoints, feature-major: each layer's backward writes its pieces straight in
            adj = None if reference else np.empty((T + 1, self.state_size, B), dtype=p.dtype).transpose(0, 2, 1)
            for k in reversed(range(p.num_layers)):  # top first: its dL/dx is the adjoint from above below
                # the adjoints need the top layer's dL/dh_t and every other h's through-time share (_adjoints)
                keep = TOP_KEEPS if k == p.num_layers - 1 else LOWER_KEEPS
                kw = {} if reference else {"out": self._adjoint_slices(adj, k, keep)}
                grads[k] = back(p.kind, p.layers[k], runs[k], dh, None, propagate, need_dx=k > 0, keep=keep, **kw)
                dh = grads[k].dx
        adjoints = self._adjoints(grads) if reference else adj[1:]
        dh0 = np.concatenate([g.ds0 for g in grads], axis=1)  # (B, S)
        final = np.concatenate([r.final_state for r in runs], axis=1)  # (B, S)
        layer_grads = tuple(
            LayerParams(
                W_ih=g.W_ih,
                W_hh=g.W_hh,
                b_ih=g.b_ih if p.bias else np.zeros_like(g.b_ih),
                b_hh=g.b_hh if p.bias else np.zeros_like(g.b_hh),
            )
            for g in grads
        )
        net_grads = NetParams(p.kind, layer_grads, dW_y, dc, p.bias)
        if not np.isfinite(L) or not all(np.isfinite(v).all() for v in (*net_grads.as_dict().values(), dh0)):
            raise NonFiniteError(
                f"the loss or a gradient is not finite (loss = {L}): the network overflowed; "
                "lower the input scale, the weights or the sequence length"
            )
        if propagate is None:
            jvps = T
        else:
            jvps = sum(propagate.any(axis=1).tolist()[1:]) + 1  # the steps that send anything back
        return GradResult(
            loss=L, grads=net_grads, dh0=dh0, adjoints=adjoints, final_state=final, method=method, paths=T, jvps=jvps
        )

    def _adjoint_slices(self, adj: np.ndarray, k: int, keep: frozenset[str]) -> dict[str, np.ndarray]:
        """Layer k's pieces of the adjoints adj (T + 1, B, S), index t the state s_t: its h's dL/dh_t (the
        top layer) or through-time share ds_h, and an LSTM's ds_c (module docstring)."""
        H, base = self.hidden_size, self._layer_slice(k).start
        out = {"dh": adj[1:, :, base : base + H]} if "dh" in keep else {"ds_h": adj[:, :, base : base + H]}
        if self.name == "lstm":
            out["ds_c"] = adj[:, :, base + H : base + 2 * H]
        return out

    def _adjoints(self, grads: list[ly.LayerGrads]) -> np.ndarray:
        """dL/ds_t (T, B, S): the top layer's h takes its own loss and what comes back through time
        (its dh); every other piece only what comes back through time (module docstring)."""
        top = grads[-1]
        if len(grads) == 1 and top.ds_c is None:
            return top.dh
        T, B, H = top.dh.shape
        adj = np.empty((T, B, self.state_size), dtype=top.dh.dtype)  # (T, B, S)
        for k, g in enumerate(grads):
            base = self._layer_slice(k).start
            adj[:, :, base : base + H] = g.dh if k == len(grads) - 1 else g.ds_h[1:]
            if g.ds_c is not None:
                adj[:, :, base + H : base + 2 * H] = g.ds_c[1:]
        return adj

    # ------------------------------------------------------------------------ the Jacobian of a step

    def _coefficients(self, run: Run, t: int) -> list[dict[str, np.ndarray]]:
        """Step t's `linearise` factors, (B, H) each, for every layer."""
        return [{name: v[0] for name, v in ly.linearise(r, t - 1, t).items()} for r in run.cache]

    def _check_step(self, run: Run, t: int) -> None:
        if not 1 <= t <= run.seq_len:
            raise ValueError(f"`t` must be a step in 1..T = 1..{run.seq_len}; got {t}")

    def jvp(self, run: Run, t: int, Q: np.ndarray) -> np.ndarray:
        """J_t Q (B, S, k) for a frame Q (B, S, k): the layers bottom-up."""
        self._check_step(run, t)
        p, H = self._params, self.hidden_size
        out = np.empty(Q.shape, dtype=np.result_type(Q, self.dtype))  # (B, S, k)
        dx = None  # the change of layer k's input x_t: layer k - 1's change of h_t
        for k, coef in enumerate(self._coefficients(run, t)):
            sl = self._layer_slice(k)
            out[:, sl] = ly.jvp_step(p.kind, p.layers[k], coef, dx, Q[:, sl])
            dx = out[:, sl.start : sl.start + H]
        return out

    def jacobian(self, run: Run, t: int) -> np.ndarray:
        """J_t = ds_t/ds_{t-1} (B, S, S), from each layer's step Jacobians (core/layers.py `step_jacobians`)."""
        self._check_step(run, t)
        p, H = self._params, self.hidden_size
        J = np.zeros((run.batch, self.state_size, self.state_size), dtype=self.dtype)  # (B, S, S)
        for k, coef in enumerate(self._coefficients(run, t)):
            A, C = ly.step_jacobians(p.kind, p.layers[k], coef)  # (B, LS, LS), (B, LS, D_k)
            sl = self._layer_slice(k)
            J[:, sl, sl] = A
            if k > 0:  # through layer k - 1's h_t, which layer k reads at the same step
                below = self._layer_slice(k - 1).start
                J[:, sl] += np.matmul(C, J[:, below : below + H])
        return J

    def vjp_stepper(self, run: Run, rows: int) -> VJPStepper:
        return _NetStepper(self, run, rows)

    def gain_stats(self, run: Run, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Per layer the batch means (hi - lo,) of what sets the gain of steps lo+1..hi: an LSTM's forget
        gate (the cell path's gain) and output gate, a GRU's update gate z (the share of h_{t-1} kept),
        an RNN's f'."""
        out: dict[str, np.ndarray] = {}
        for k, r in enumerate(run.cache):
            if self.name == "lstm":
                out[f"l{k}.mean_forget"] = r.gates["f"][lo:hi].mean(axis=(1, 2))
                out[f"l{k}.mean_output"] = r.gates["o"][lo:hi].mean(axis=(1, 2))
            elif self.name == "gru":
                out[f"l{k}.mean_update"] = r.gates["z"][lo:hi].mean(axis=(1, 2))
            else:
                out[f"l{k}.mean_fprime"] = ly.linearise(r, lo, hi)["fp"].mean(axis=(1, 2))
        return out


class _NetStepper(VJPStepper):
    """J_t^T v for `rows` stacked blocks of B rows: per chunk each layer's `linearise` factors are laid
    out once for all row blocks; a step sweeps the layers top-down, each sending the adjoint of its
    input x_t to the h of the layer below."""

    def __init__(self, cell: NetCell, run: Run, rows: int) -> None:
        self.kind, self.layers = cell.name, cell.params.layers
        self.runs, self.rows = run.cache, rows
        self.H, self.LS = cell.hidden_size, cell.params.layer_state
        self.lo = 0
        self.coef: list[dict[str, np.ndarray]] = []

    def prepare(self, lo: int, hi: int) -> None:
        n, self.lo = hi - lo, lo
        self.coef = []
        for r in self.runs:
            B, H = r.h.shape[1:]
            tiled = {}
            for name, v in ly.linearise(r, lo, hi).items():  # (n, B, H) -> (n, rows B, H), a copy per block
                tiled[name] = np.broadcast_to(v[:, None], (n, self.rows, B, H)).reshape(n, self.rows * B, H)
            self.coef.append(tiled)

    def step(self, t: int, v: np.ndarray, out: np.ndarray) -> None:
        j, H, LS = t - self.lo - 1, self.H, self.LS
        up = None  # the adjoint of layer k's h_t from layer k + 1's input at the same step
        for k in reversed(range(len(self.layers))):
            base = k * LS
            vh = v[:, base : base + H] if up is None else v[:, base : base + H] + up  # (rows B, H)
            vc = v[:, base + H : base + LS] if self.kind == "lstm" else None
            coef = {name: a[j] for name, a in self.coef[k].items()}
            dh_prev, dc_prev, up = ly.vjp_step(self.kind, self.layers[k], coef, vh, vc, need_dx=k > 0)
            out[:, base : base + H] = dh_prev
            if dc_prev is not None:
                out[:, base + H : base + LS] = dc_prev

"""One recurrent layer of a stack, forward and backward: PyTorch's RNN, GRU and LSTM (core/net.py).

Each comes twice, and tests/test_netcell.py asserts the two agree:

- the **reference** (`forward_reference`, `backward_reference`): one step at a time, every
  backward line mirroring a forward line, as min-char-rnn writes BPTT (core/bptt.py's
  `backward_reference` is the model);
- the **fast** kernels (`forward`, `backward`): the input projection x_t W_ih^T + b_ih of all
  steps is one matrix product before the loop; each step does one product with W_hh and a few
  in-place element-wise calls on preallocated buffers; going back, everything that does not
  depend on the recursion (the gate derivatives) is computed in bulk first (`linearise`), so a
  step is one broadcast product, one matrix product and one or two additions; dW_ih, dW_hh,
  the biases and dL/dx are single products over all (t, b) rows after the loop.

What the fast kernels do differently, and why (benchmarks/README.md has the measurements):

- sigmoid(a) = 0.5 tanh(a / 2) + 0.5: numpy's tanh is SIMD, scipy's expit is not. The rows of
  the weights and biases that feed a sigmoid are halved once (exact: a power of two), so one
  tanh call covers every gate of a step.
- the gates are kept in the order that makes each step's work contiguous: the LSTM's as
  (o, i, f, g) with c_{t-1} stored right after g, so that [i, f] * [g, c_{t-1}] is one call;
  the backward's buffers put each step's gate gradients side by side with the carries they
  feed, so that one broadcast product writes all of them, and the matrix product reads the
  gate gradients in PyTorch's order straight from that buffer.

The backward takes the adjoint arriving at h_t from above (the loss, or the layer above, at
the same step) for every t, the carries into the last step, and the truncation weights
`propagate` (core/bptt.py: xi_t scales what step t sends back through time; for an LSTM both
the h and the c carry). It returns `LayerGrads`.

The state-to-state derivatives of one step, shared by the fast backward and the Jacobian
products of core/netcell.py, come from `linearise`: the diagonal factors d s_t / d(pre-activation)
of each step; `jvp_step`, `vjp_step` and `step_jacobians` apply them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.core.activations import Activation, get_activation
from bptt_cli.core.net import GATES, LayerParams

# ---------------------------------------------------------------------------- what a layer keeps


@dataclass(frozen=True)
class LayerRun:
    """One layer's forward pass over a sequence.

    kind : 'rnn' | 'gru' | 'lstm'
    x : (T, B, D) the layer's input (the network's input, or the layer below's h_1..h_T)
    h : (T + 1, B, H) h_0..h_T
    c : (T + 1, B, H) c_0..c_T (lstm), else None
    gates : (T, B, H) per step, by name (views allowed): gru 'r', 'z', 'n' and 'hn' = W_hn h_{t-1} + b_hn;
        lstm 'i', 'f', 'g', 'o' and 'tc' = tanh(c_t); nothing for rnn (f' comes from h)
    act : the rnn's activation (None for gru, lstm)
    """

    kind: str
    x: np.ndarray
    h: np.ndarray
    c: np.ndarray | None
    gates: dict[str, np.ndarray]
    act: Activation | None = None

    @property
    def final_state(self) -> np.ndarray:
        """s_T (B, LS): h_T, or [h_T, c_T] for an LSTM."""
        return self.h[-1].copy() if self.c is None else np.concatenate([self.h[-1], self.c[-1]], axis=1)


@dataclass(frozen=True)
class LayerGrads:
    """What a layer's backward returns.

    W_ih, W_hh, b_ih, b_hh : dL/d of each of the layer's arrays
    dx : (T, B, D) dL/dx_t for the layer below (None when not asked for)
    dh : (T, B, H) dL/dh_t as the layer's output: what the layer above (or the loss) and step t + 1 send
    ds_h : (T + 1, B, H) what the steps after t send back to h_t through time (xi-scaled): index 0 is
        dL/dh_0, index T the carry given
    ds_c : (T + 1, B, H) the same for c_t (lstm), else None
    """

    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    dx: np.ndarray | None
    dh: np.ndarray
    ds_h: np.ndarray
    ds_c: np.ndarray | None

    @property
    def ds0(self) -> np.ndarray:
        """dL/ds_0 (B, LS)."""
        return self.ds_h[0].copy() if self.ds_c is None else np.concatenate([self.ds_h[0], self.ds_c[0]], axis=1)


def layer_state(kind: str, hidden: int) -> int:
    """The width of one layer's state: H, or 2 H for an LSTM (h and c)."""
    return 2 * hidden if kind == "lstm" else hidden


def _split_state(kind: str, s: np.ndarray, H: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(h, c) from a layer's state (..., LS); c is None but for an LSTM."""
    return (s[..., :H], s[..., H:]) if kind == "lstm" else (s, None)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-a) = inf for a very negative a gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-a))


# ---------------------------------------------------------------------------- the reference


def forward_reference(
    kind: str, layer: LayerParams, x: np.ndarray, s0: np.ndarray, act: str | Activation = "tanh"
) -> LayerRun:
    """One layer over a sequence, one readable step at a time (PyTorch's equations, core/net.py).

    Parameters
    ----------
    kind : 'rnn' | 'gru' | 'lstm'
    layer : the layer's W_ih (G H, D), W_hh (G H, H), b_ih, b_hh (G H,)
    x : (T, B, D) inputs, in the parameters' dtype
    s0 : (B, LS) initial state: h_0, or [h_0, c_0] for an LSTM
    act : the rnn's activation (ignored for gru, lstm)

    Returns
    -------
    LayerRun
    """
    T, B, _ = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    h = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    c = np.empty((T + 1, B, H), dtype=dt) if kind == "lstm" else None  # (T+1, B, H)
    names = {"rnn": (), "gru": ("r", "z", "n", "hn"), "lstm": ("i", "f", "g", "o", "tc")}[kind]
    gates = {name: np.empty((T, B, H), dtype=dt) for name in names}  # (T, B, H) each
    fn = get_activation(act) if kind == "rnn" else None
    h[0], s_c = _split_state(kind, s0, H)
    if c is not None:
        c[0] = s_c
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            gi = x[t] @ layer.W_ih.T + layer.b_ih  # (B, G H)
            gh = h[t] @ layer.W_hh.T + layer.b_hh  # (B, G H)
            if kind == "rnn":
                h[t + 1] = fn.apply(gi + gh)  # h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
            elif kind == "gru":
                r = _sigmoid(gi[:, :H] + gh[:, :H])  # reset gate
                z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])  # update gate: the share of h_{t-1} kept
                hn = gh[:, 2 * H :]  # W_hn h_{t-1} + b_hn, which the reset gate scales
                n = np.tanh(gi[:, 2 * H :] + r * hn)  # the candidate
                h[t + 1] = (1 - z) * n + z * h[t]
                gates["r"][t], gates["z"][t], gates["n"][t], gates["hn"][t] = r, z, n, hn
            else:
                a = gi + gh  # (B, 4H) pre-activations, gates i, f, g, o
                i = _sigmoid(a[:, :H])
                f = _sigmoid(a[:, H : 2 * H])
                g = np.tanh(a[:, 2 * H : 3 * H])
                o = _sigmoid(a[:, 3 * H :])
                c[t + 1] = f * c[t] + i * g
                tc = np.tanh(c[t + 1])
                h[t + 1] = o * tc
                gates["i"][t], gates["f"][t], gates["g"][t], gates["o"][t], gates["tc"][t] = i, f, g, o, tc
    return LayerRun(kind, x, h, c, gates, fn)


def backward_reference(
    kind: str,
    layer: LayerParams,
    run: LayerRun,
    dh: np.ndarray,
    carry: np.ndarray | None = None,
    propagate: np.ndarray | None = None,
    *,
    need_dx: bool = True,
) -> LayerGrads:
    """BPTT through one layer as min-char-rnn writes it, one step at a time.

    Parameters
    ----------
    kind, layer : as for `forward_reference`
    run : the layer's forward pass (either version)
    dh : (T, B, H) the adjoint arriving at h_t from above at every step (dl_t/dh_t, or the layer above's dL/dx_t)
    carry : (B, LS) what arrives at s_T from beyond the last step (zeros when None)
    propagate : (T, B) truncation weights xi (core/bptt.py), None for full BPTT
    need_dx : compute dL/dx (the bottom layer's is not needed)

    Returns
    -------
    LayerGrads
    """
    T, B, H = dh.shape
    x, hs, cs, gt = run.x, run.h, run.c, run.gates
    dW_ih, dW_hh = np.zeros_like(layer.W_ih), np.zeros_like(layer.W_hh)
    db_ih, db_hh = np.zeros_like(layer.b_ih), np.zeros_like(layer.b_hh)
    dx = np.zeros_like(x) if need_dx else None  # (T, B, D)
    delta = np.empty_like(dh)  # (T, B, H)
    ds_h = np.empty((T + 1, B, H), dtype=dh.dtype)  # (T+1, B, H)
    ds_c = np.empty((T + 1, B, H), dtype=dh.dtype) if kind == "lstm" else None  # (T+1, B, H)
    carry = np.zeros((B, layer_state(kind, H)), dtype=dh.dtype) if carry is None else carry
    ds_h[T], c_in = _split_state(kind, carry, H)
    if ds_c is not None:
        ds_c[T] = c_in
    for t in reversed(range(T)):  # index t holds step t + 1; hs[t] is h_{t}, the state before it
        d = dh[t] + ds_h[t + 1]  # dL/dh_t = from above at this step + everything later, through time
        delta[t] = d
        h_prev = hs[t]
        if kind == "rnn":
            ga = run.act.derivative(hs[t + 1]) * d  # back through f: f'(a_t) * delta
            gi = gh = ga  # the same pre-activation takes W_ih x_t + b_ih and W_hh h_{t-1} + b_hh
            back_h = ga @ layer.W_hh  # on to h_{t-1}, through W_hh h_{t-1}
        elif kind == "gru":
            r, z, n, hn = gt["r"][t], gt["z"][t], gt["n"][t], gt["hn"][t]
            dn = d * (1 - z)  # back through h_t = (1 - z) n + z h_{t-1}
            dz = d * (h_prev - n)
            da_n = dn * (1 - n * n)  # back through n = tanh(a_n)
            dr = da_n * hn  # back through a_n = W_in x_t + b_in + r * hn
            dhn = da_n * r
            da_r = dr * r * (1 - r)  # back through the sigmoids
            da_z = dz * z * (1 - z)
            gi = np.concatenate([da_r, da_z, da_n], axis=1)  # d/d(W_ih x_t + b_ih), (B, 3H)
            gh = np.concatenate([da_r, da_z, dhn], axis=1)  # d/d(W_hh h_{t-1} + b_hh), (B, 3H)
            back_h = d * z + gh @ layer.W_hh  # on to h_{t-1}: directly (z h_{t-1}) and through W_hh
        else:
            i, f, g, o, tc = gt["i"][t], gt["f"][t], gt["g"][t], gt["o"][t], gt["tc"][t]
            dc = ds_c[t + 1] + d * o * (1 - tc * tc)  # dL/dc_t: through time + through h_t = o tanh(c_t)
            do = d * tc  # back through h_t = o tanh(c_t)
            di, df, dg = dc * g, dc * cs[t], dc * i  # back through c_t = f c_{t-1} + i g
            ga = np.concatenate(  # back through the gates' nonlinearities, (B, 4H)
                [di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1
            )
            gi = gh = ga  # one pre-activation takes both products, as in the rnn
            back_h = ga @ layer.W_hh  # on to h_{t-1}, through W_hh h_{t-1}
            ds_c[t] = dc * f  # on to c_{t-1}, through f c_{t-1}
        dW_ih += gi.T @ x[t]  # back through W_ih x_t + b_ih
        db_ih += gi.sum(axis=0)
        dW_hh += gh.T @ h_prev  # back through W_hh h_{t-1} + b_hh
        db_hh += gh.sum(axis=0)
        if dx is not None:
            dx[t] = gi @ layer.W_ih  # on to the layer below, at the same step
        ds_h[t] = back_h
        if propagate is not None:
            xi = propagate[t][:, None]  # truncation: xi_t scales what step t sends back, h and c alike
            ds_h[t] *= xi
            if ds_c is not None:
                ds_c[t] *= xi
    return LayerGrads(dW_ih, dW_hh, db_ih, db_hh, dx, delta, ds_h, ds_c)


# ---------------------------------------------------------------------------- one step's derivatives


def linearise(run: LayerRun, lo: int, hi: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The diagonal factors of the derivative of steps t = lo+1..hi, by name, (hi - lo, B, H) each.

    With a = the pre-activations (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, gates stacked as PyTorch does):

        rnn   fp = f'(a)                                  dh_t = fp * da
        gru   cr, cz, cn = dh_t/da_r, dh_t/da_z, dh_t/da_n     (a_n = W_in x + b_in + r * hn)
              cnr = cn * r = dh_t/d(hn),  z = dh_t/dh_{t-1} directly
        lstm  pi, pf, pg = dc_t/da_i, dc_t/da_f, dc_t/da_g,  f = dc_t/dc_{t-1}
              po = dh_t/da_o,  pc = dh_t/dc_t

    `out` may hold preallocated arrays (views) to write into, by the same names.
    """
    k = hi - lo
    B, H = run.h.shape[1:]
    kind = run.kind
    names = {"rnn": ("fp",), "gru": ("cn", "cr", "cz", "cnr", "z"), "lstm": ("f", "pi", "pf", "pg", "po", "pc")}[kind]
    out = {} if out is None else out
    for name in names:
        if name not in out:
            out[name] = np.empty((k, B, H), dtype=run.h.dtype)  # (k, B, H)
    h_prev = run.h[lo:hi]  # (k, B, H)
    if kind == "rnn":
        run.act.fprime(run.h[lo + 1 : hi + 1], out["fp"])
        return out
    g = {name: v[lo:hi] for name, v in run.gates.items()}  # (k, B, H) each
    tmp = np.empty((k, B, H), dtype=run.h.dtype)  # (k, B, H)
    if kind == "gru":
        r, z, n = g["r"], g["z"], g["n"]
        cn, cr, cz = out["cn"], out["cr"], out["cz"]
        np.multiply(n, n, out=cn)
        np.subtract(1, cn, out=cn)  # tanh' = 1 - n^2
        np.subtract(1, z, out=tmp)
        np.multiply(cn, tmp, out=cn)  # cn = (1 - z)(1 - n^2): h_t takes (1 - z) n
        np.multiply(z, tmp, out=tmp)  # sigma' = z (1 - z)
        np.subtract(h_prev, n, out=cz)
        np.multiply(cz, tmp, out=cz)  # cz = (h_{t-1} - n) z (1 - z)
        np.multiply(cn, r, out=out["cnr"])  # cnr = cn r: the reset gate scales hn
        np.subtract(1, r, out=tmp)
        np.multiply(tmp, r, out=tmp)
        np.multiply(tmp, g["hn"], out=cr)
        np.multiply(cr, cn, out=cr)  # cr = cn hn r (1 - r)
        np.copyto(out["z"], z)
        return out
    i, f, gg, o, tc = g["i"], g["f"], g["g"], g["o"], g["tc"]
    pi, pf, pg, po, pc = out["pi"], out["pf"], out["pg"], out["po"], out["pc"]
    np.subtract(1, i, out=tmp)
    np.multiply(tmp, i, out=pi)
    np.multiply(pi, gg, out=pi)  # pi = g i (1 - i)
    np.subtract(1, f, out=tmp)
    np.multiply(tmp, f, out=pf)
    np.multiply(pf, run.c[lo:hi], out=pf)  # pf = c_{t-1} f (1 - f)
    np.multiply(gg, gg, out=pg)
    np.subtract(1, pg, out=pg)
    np.multiply(pg, i, out=pg)  # pg = i (1 - g^2)
    np.subtract(1, o, out=tmp)
    np.multiply(tmp, o, out=po)
    np.multiply(po, tc, out=po)  # po = tanh(c_t) o (1 - o)
    np.multiply(tc, tc, out=pc)
    np.subtract(1, pc, out=pc)
    np.multiply(pc, o, out=pc)  # pc = o (1 - tanh(c_t)^2)
    np.copyto(out["f"], f)
    return out


def jvp_step(
    kind: str, layer: LayerParams, coef: dict[str, np.ndarray], dx: np.ndarray | None, ds_prev: np.ndarray
) -> np.ndarray:
    """ds_t = (ds_t/dx_t) dx + (ds_t/ds_{t-1}) ds_prev for k vectors at once.

    Parameters
    ----------
    coef : one step's `linearise` factors, (B, H) each
    dx : (B, D, k) a change of the layer's input x_t, None for none
    ds_prev : (B, LS, k) a change of s_{t-1}

    Returns
    -------
    (B, LS, k)
    """
    H = layer.W_hh.shape[1]
    dh_prev, dc_prev = (ds_prev[:, :H], ds_prev[:, H:]) if kind == "lstm" else (ds_prev, None)  # (B, H, k)
    ah = np.matmul(layer.W_hh, dh_prev)  # (B, G H, k) W_hh dh_{t-1}
    ai = None if dx is None else np.matmul(layer.W_ih, dx)  # (B, G H, k) W_ih dx_t
    c = {name: v[:, :, None] for name, v in coef.items()}  # (B, H, 1) each
    if kind == "rnn":
        return c["fp"] * (ah if ai is None else ah + ai)
    if kind == "gru":
        a_rz = ah[:, : 2 * H] if ai is None else ah[:, : 2 * H] + ai[:, : 2 * H]
        out = c["cr"] * a_rz[:, :H] + c["cz"] * a_rz[:, H:] + c["cnr"] * ah[:, 2 * H :] + c["z"] * dh_prev
        if ai is not None:
            out += c["cn"] * ai[:, 2 * H :]  # the input's share of a_n is not scaled by r
        return out
    a = ah if ai is None else ah + ai  # (B, 4H, k)
    dc = c["pi"] * a[:, :H] + c["pf"] * a[:, H : 2 * H] + c["pg"] * a[:, 2 * H : 3 * H] + c["f"] * dc_prev
    dh = c["po"] * a[:, 3 * H :] + c["pc"] * dc
    return np.concatenate([dh, dc], axis=1)


def vjp_step(
    kind: str,
    layer: LayerParams,
    coef: dict[str, np.ndarray],
    vh: np.ndarray,
    vc: np.ndarray | None,
    need_dx: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The transposed step: what an adjoint (vh, vc) of s_t sends back to s_{t-1} and to x_t.

    Parameters
    ----------
    coef : one step's `linearise` factors, (N, H) each (N rows: a batch, or several row blocks of one)
    vh : (N, H) the adjoint of h_t;  vc : (N, H) of c_t (lstm), else None
    need_dx : also return the adjoint of the layer's input x_t

    Returns
    -------
    (dh_prev (N, H), dc_prev (N, H) or None, dx (N, D) or None)
    """
    if kind == "rnn":
        ga = coef["fp"] * vh  # (N, H)
        return ga @ layer.W_hh, None, ga @ layer.W_ih if need_dx else None
    if kind == "gru":
        gr, gz = coef["cr"] * vh, coef["cz"] * vh  # (N, H) each
        gh = np.concatenate([gr, gz, coef["cnr"] * vh], axis=1)  # (N, 3H)
        dx = np.concatenate([gr, gz, coef["cn"] * vh], axis=1) @ layer.W_ih if need_dx else None
        return gh @ layer.W_hh + coef["z"] * vh, None, dx
    dc = vc + coef["pc"] * vh  # (N, H) dL/dc_t, h_t's share included
    ga = np.concatenate([coef["pi"] * dc, coef["pf"] * dc, coef["pg"] * dc, coef["po"] * vh], axis=1)  # (N, 4H)
    return ga @ layer.W_hh, coef["f"] * dc, ga @ layer.W_ih if need_dx else None


def step_jacobians(kind: str, layer: LayerParams, coef: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One step's Jacobians as matrices: A = ds_t/ds_{t-1} (B, LS, LS) and C = ds_t/dx_t (B, LS, D).

    coef : one step's `linearise` factors, (B, H) each. Written from the formulas of `linearise`
    (diag(factor) times the rows of a weight block), independently of `jvp_step`.
    """
    H = layer.W_hh.shape[1]
    Wh = [layer.W_hh[j * H : (j + 1) * H] for j in range(GATES[kind])]  # (H, H) blocks
    Wi = [layer.W_ih[j * H : (j + 1) * H] for j in range(GATES[kind])]  # (H, D) blocks
    c = {name: v[:, :, None] for name, v in coef.items()}  # (B, H, 1): scales the rows
    if kind == "rnn":
        return c["fp"] * Wh[0], c["fp"] * Wi[0]
    if kind == "gru":
        eye = np.eye(H, dtype=layer.W_hh.dtype)
        A = c["cr"] * Wh[0] + c["cz"] * Wh[1] + c["cnr"] * Wh[2] + c["z"] * eye  # (B, H, H)
        C = c["cr"] * Wi[0] + c["cz"] * Wi[1] + c["cn"] * Wi[2]  # (B, H, D)
        return A, C
    B = next(iter(coef.values())).shape[0]
    A = np.zeros((B, 2 * H, 2 * H), dtype=layer.W_hh.dtype)
    dc_dh = c["pi"] * Wh[0] + c["pf"] * Wh[1] + c["pg"] * Wh[2]  # (B, H, H) dc_t/dh_{t-1}
    dc_dx = c["pi"] * Wi[0] + c["pf"] * Wi[1] + c["pg"] * Wi[2]  # (B, H, D) dc_t/dx_t
    diag = np.arange(H)
    A[:, H:, :H] = dc_dh
    A[:, H + diag, H + diag] = coef["f"]  # dc_t/dc_{t-1} = diag(f)
    A[:, :H, :H] = c["po"] * Wh[3] + c["pc"] * dc_dh  # dh_t/dh_{t-1}
    A[:, diag, H + diag] = coef["pc"] * coef["f"]  # dh_t/dc_{t-1} = diag(pc f)
    C = np.concatenate([c["po"] * Wi[3] + c["pc"] * dc_dx, dc_dx], axis=1)  # (B, 2H, D)
    return A, C


# ---------------------------------------------------------------------------- the fast kernels


def forward(kind: str, layer: LayerParams, x: np.ndarray, s0: np.ndarray, act: str | Activation = "tanh") -> LayerRun:
    """The same as `forward_reference`, fast (module docstring); same parameters and result."""
    if kind == "rnn":
        return _rnn_forward(layer, x, s0, get_activation(act))
    return _gru_forward(layer, x, s0) if kind == "gru" else _lstm_forward(layer, x, s0)


def backward(
    kind: str,
    layer: LayerParams,
    run: LayerRun,
    dh: np.ndarray,
    carry: np.ndarray | None = None,
    propagate: np.ndarray | None = None,
    *,
    need_dx: bool = True,
) -> LayerGrads:
    """The same as `backward_reference`, fast (module docstring); same parameters and result.

    dh is read only; the result's arrays are new (ds_c and dh may be views of one buffer).
    """
    T, B, H = dh.shape
    carry = np.zeros((B, layer_state(kind, H)), dtype=dh.dtype) if carry is None else carry
    xi = None if propagate is None else propagate[:, :, None]  # (T, B, 1)
    live = None if propagate is None else propagate.any(axis=1).tolist()  # steps that send anything back
    fn = {"rnn": _rnn_backward, "gru": _gru_backward, "lstm": _lstm_backward}[kind]
    return fn(layer, run, dh, carry, xi, live, need_dx)


def _half(dtype: np.dtype) -> np.ndarray:
    # a 0-d array: numpy converts a Python float on every call, which costs as much as a small product
    return np.array(0.5, dtype=dtype)


def _big_products(
    G: np.ndarray, X: np.ndarray, H_prev: np.ndarray, W_ih: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """G^T X, G^T H_prev, the column sums of G and G W_ih (None without W_ih), over all (t, b) rows.

    G (N, G H) may be a strided view (rows of a wider buffer): OpenBLAS reads it in place.
    """
    ones = np.ones(G.shape[0], dtype=G.dtype)  # (N,)
    dx = None if W_ih is None else G @ W_ih  # (N, D)
    return G.T @ X, G.T @ H_prev, ones @ G, dx  # a product with ones beats sum(axis=0) on these rows


def _rnn_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray, act: Activation) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    h = np.empty((T + 1, B, H), dtype=layer.W_hh.dtype)  # (T+1, B, H)
    h[0] = s0
    a = h[1:].reshape(T * B, H)  # (T B, H): the input projection goes straight into the state buffer
    np.matmul(x.reshape(T * B, D), layer.W_ih.T, out=a)
    a += layer.b_ih + layer.b_hh
    W_hT = np.ascontiguousarray(layer.W_hh.T)  # (H, H): OpenBLAS is faster on a contiguous copy
    tmp = np.empty((B, H), dtype=h.dtype)  # (B, H)
    f = act.f
    prev = h[0]
    with np.errstate(over="ignore", invalid="ignore"):
        for cur in h[1:]:
            np.dot(prev, W_hT, out=tmp)
            np.add(cur, tmp, out=cur)  # a_t
            if f is not None:
                f(cur, out=cur)  # h_t = f(a_t)
            prev = cur
    return LayerRun("rnn", x, h, None, {}, act)


def _rnn_backward(layer, run, dh, carry, xi, live, need_dx) -> LayerGrads:  # noqa: ANN001 - see `backward`
    T, B, H = dh.shape
    D = run.x.shape[2]
    fp = linearise(run, 0, T)["fp"]  # (T, B, H) f'(a_t), then g_t = f'(a_t) * delta_t
    delta = np.empty_like(dh)  # (T, B, H)
    ds_h = np.empty((T + 1, B, H), dtype=dh.dtype)  # (T+1, B, H)
    ds_h[T] = carry
    W_hh = np.ascontiguousarray(layer.W_hh)  # (H, H)
    for t in range(T - 1, -1, -1):
        d = delta[t]
        np.add(dh[t], ds_h[t + 1], out=d)  # dL/dh_t = from above + through time
        g = fp[t]
        np.multiply(g, d, out=g)  # back through f
        if live is None:
            np.dot(g, W_hh, out=ds_h[t])  # back through W_hh h_{t-1}
        elif live[t]:
            np.dot(g, W_hh, out=ds_h[t])
            np.multiply(ds_h[t], xi[t], out=ds_h[t])  # truncation: xi_t
        else:
            ds_h[t].fill(0)
    G = fp.reshape(T * B, H)  # (T B, H)
    dW_ih, dW_hh, db, dx = _big_products(
        G, run.x.reshape(T * B, D), run.h[:T].reshape(T * B, H), layer.W_ih if need_dx else None
    )
    return LayerGrads(dW_ih, dW_hh, db, db.copy(), None if dx is None else dx.reshape(T, B, D), delta, ds_h, None)


def _gru_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    half = _half(dt)
    # r and z feed sigmoids: their rows are halved so that tanh(0.5 a) comes out of the products
    scale = np.ones((3 * H, 1), dtype=dt)  # (3H, 1)
    scale[: 2 * H] = 0.5
    W_iT = (layer.W_ih * scale).T  # (D, 3H)
    b_i = layer.b_ih + np.concatenate([layer.b_hh[: 2 * H], np.zeros(H, dtype=dt)])  # (3H,) b_hn stays inside r * hn
    b_i *= scale[:, 0]
    W_hT = np.ascontiguousarray((layer.W_hh * scale).T)  # (H, 3H)
    b_hn = layer.b_hh[2 * H :]  # (H,)
    Z = np.empty((T, B, 3 * H), dtype=dt)  # (T, B, 3H): the input projection, then [r, z, n] in place
    np.matmul(x.reshape(T * B, D), W_iT, out=Z.reshape(T * B, 3 * H))
    Z += b_i
    h = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    h[0] = s0
    hn = np.empty((T, B, H), dtype=dt)  # (T, B, H) W_hn h_{t-1} + b_hn
    tmp = np.empty((B, 3 * H), dtype=dt)  # (B, 3H) h_{t-1} W_hh^T
    t_rz, t_n = tmp[:, : 2 * H], tmp[:, 2 * H :]
    RZ, R, N, ZZ = Z[:, :, : 2 * H], Z[:, :, :H], Z[:, :, 2 * H :], Z[:, :, H : 2 * H]  # (T, B, .) views
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            prev, cur, rz, n = h[t], h[t + 1], RZ[t], N[t]
            np.dot(prev, W_hT, out=tmp)
            np.add(t_n, b_hn, out=hn[t])
            np.add(rz, t_rz, out=rz)  # (a_r, a_z) / 2
            np.tanh(rz, out=rz)
            np.multiply(rz, half, out=rz)
            np.add(rz, half, out=rz)  # r, z = sigmoid(a_r), sigmoid(a_z)
            np.multiply(R[t], hn[t], out=t_n)
            np.add(n, t_n, out=n)  # a_n = W_in x_t + b_in + r * hn
            np.tanh(n, out=n)
            np.subtract(prev, n, out=cur)
            np.multiply(cur, ZZ[t], out=cur)
            np.add(cur, n, out=cur)  # h_t = n + z (h_{t-1} - n) = (1 - z) n + z h_{t-1}
    gates = {"r": R, "z": ZZ, "n": N, "hn": hn}
    return LayerRun("gru", x, h, None, gates)


def _gru_backward(layer, run, dh, carry, xi, live, need_dx) -> LayerGrads:  # noqa: ANN001 - see `backward`
    T, B, H = dh.shape
    D = run.x.shape[2]
    dt = dh.dtype
    # per step, one broadcast product delta_t * P_t writes the five slots [a_n (input's share), a_r, a_z,
    # hn, h_{t-1} directly]: slots 0..2 are d/d(W_ih x_t + b_ih) in the order (n, r, z), slots 1..3
    # d/d(W_hh h_{t-1} + b_hh) in PyTorch's order (r, z, n), read in place by the product with W_hh
    P = np.empty((T, B, 5, H), dtype=dt)  # (T, B, 5, H)
    linearise(run, 0, T, {"cn": P[:, :, 0], "cr": P[:, :, 1], "cz": P[:, :, 2], "cnr": P[:, :, 3], "z": P[:, :, 4]})
    buf = np.empty((T, B, 5, H), dtype=dt)  # (T, B, 5, H)
    gh = buf[:, :, 1:4].reshape(T, B, 3 * H)  # (T, B, 3H) view
    direct = buf[:, :, 4]  # (T, B, H) view: z * delta_t
    delta = np.empty_like(dh)  # (T, B, H)
    delta4 = delta[:, :, None, :]  # (T, B, 1, H) view
    ds_h = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    ds_h[T] = carry
    W_hh = np.ascontiguousarray(layer.W_hh)  # (3H, H)
    for t in range(T - 1, -1, -1):
        np.add(dh[t], ds_h[t + 1], out=delta[t])  # dL/dh_t = from above + through time
        np.multiply(delta4[t], P[t], out=buf[t])  # every gate gradient of the step at once
        s = ds_h[t]
        if live is None:
            np.dot(gh[t], W_hh, out=s)  # back through W_hh h_{t-1}
            np.add(s, direct[t], out=s)  # and through z h_{t-1}
        elif live[t]:
            np.dot(gh[t], W_hh, out=s)
            np.add(s, direct[t], out=s)
            np.multiply(s, xi[t], out=s)  # truncation: xi_t
        else:
            s.fill(0)
    rows = buf.reshape(T * B, 5 * H)  # (T B, 5H)
    ones = np.ones(T * B, dtype=dt)  # (T B,)
    sums = ones @ rows  # (5H,)
    gi = rows[:, : 3 * H]  # (T B, 3H) input-side gradients in the order (n, r, z)
    dWi = gi.T @ run.x.reshape(T * B, D)  # (3H, D) rows (n, r, z)
    dW_hh = rows[:, H : 4 * H].T @ run.h[:T].reshape(T * B, H)  # (3H, H)
    dW_ih = np.concatenate([dWi[H:], dWi[:H]])  # (3H, D) back to (r, z, n)
    db_ih = np.concatenate([sums[H : 3 * H], sums[:H]])  # (3H,)
    db_hh = sums[H : 4 * H].copy()  # (3H,)
    dx = None
    if need_dx:
        W_nrz = np.concatenate([layer.W_ih[2 * H :], layer.W_ih[: 2 * H]])  # (3H, D) rows (n, r, z), as gi
        dx = (gi @ W_nrz).reshape(T, B, D)  # (T, B, D)
    return LayerGrads(dW_ih, dW_hh, db_ih, db_hh, dx, delta, ds_h, None)


# The LSTM's gates inside the fast kernels: (o, i, f, g), PyTorch's rows (i, f, g, o) = 0, 1, 2, 3
_LSTM_ORDER = (3, 0, 1, 2)


def _lstm_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    half = _half(dt)
    rows = np.concatenate([np.arange(j * H, (j + 1) * H) for j in _LSTM_ORDER])  # (4H,) PyTorch rows, our order
    scale = np.ones((4 * H, 1), dtype=dt)  # (4H, 1)
    scale[: 3 * H] = 0.5  # o, i, f feed sigmoids: halved, so that one tanh call covers every gate
    W_iT = (layer.W_ih[rows] * scale).T  # (D, 4H)
    b = (layer.b_ih + layer.b_hh)[rows] * scale[:, 0]  # (4H,)
    W_hT = np.ascontiguousarray((layer.W_hh[rows] * scale).T)  # (H, 4H)
    # row t holds step t + 1's gates (o, i, f, g) and, in slot 4, c_t: [g, c_{t-1}] sit side by side
    Gb = np.empty((T + 1, B, 5, H), dtype=dt)  # (T+1, B, 5, H)
    G4 = Gb[:T, :, :4].reshape(T, B, 4 * H)  # (T, B, 4H) view
    np.matmul(x.reshape(T * B, D), W_iT, out=G4.reshape(T * B, 4 * H))
    G4 += b
    C = Gb[:, :, 4]  # (T+1, B, H) view: c_0..c_T
    h = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    h[0], C[0] = s0[:, :H], s0[:, H:]
    SIG = Gb[:T, :, :3].reshape(T, B, 3 * H)  # (T, B, 3H) view: o, i, f
    IF, GC, OG = Gb[:T, :, 1:3], Gb[:T, :, 3:5], Gb[:T, :, 0]  # (T, B, 2, H), (T, B, 2, H), (T, B, H) views
    tc = np.empty((T, B, H), dtype=dt)  # (T, B, H) tanh(c_t)
    tmp = np.empty((B, 4 * H), dtype=dt)  # (B, 4H) h_{t-1} W_hh^T
    pair = np.empty((B, 2, H), dtype=dt)  # (B, 2, H) [i g, f c_{t-1}]
    ig, fc = pair[:, 0], pair[:, 1]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            a = G4[t]
            np.dot(h[t], W_hT, out=tmp)
            np.add(a, tmp, out=a)
            np.tanh(a, out=a)
            s = SIG[t]
            np.multiply(s, half, out=s)
            np.add(s, half, out=s)  # o, i, f = sigmoid(a_o), sigmoid(a_i), sigmoid(a_f); g = tanh(a_g)
            np.multiply(IF[t], GC[t], out=pair)
            np.add(ig, fc, out=C[t + 1])  # c_t = f c_{t-1} + i g
            np.tanh(C[t + 1], out=tc[t])
            np.multiply(OG[t], tc[t], out=h[t + 1])  # h_t = o tanh(c_t)
    gates = {"i": Gb[:T, :, 1], "f": Gb[:T, :, 2], "g": Gb[:T, :, 3], "o": OG, "tc": tc}
    return LayerRun("lstm", x, h, C, gates)


def _lstm_backward(layer, run, dh, carry, xi, live, need_dx) -> LayerGrads:  # noqa: ANN001 - see `backward`
    T, B, H = dh.shape
    D = run.x.shape[2]
    dt = dh.dtype
    # row t of the buffer: slot 0 what step t + 1 sends back to c_t (dL/dc_t f), slots 1..4 the gate
    # gradients in PyTorch's order (i, f, g, o), read in place by the products, slot 5 dL/dh_t pc;
    # row T's slot 0 is the c carry given. Two broadcast products per step fill a row:
    # dL/dh_t * [po, pc] -> slots 4, 5 and dL/dc_t * [f, pi, pf, pg] -> slots 0..3.
    P4 = np.empty((T, B, 4, H), dtype=dt)  # (T, B, 4, H) [f, pi, pf, pg]
    Q = np.empty((T, B, 2, H), dtype=dt)  # (T, B, 2, H) [po, pc]
    coef = {name: P4[:, :, j] for j, name in enumerate(("f", "pi", "pf", "pg"))}
    linearise(run, 0, T, {**coef, "po": Q[:, :, 0], "pc": Q[:, :, 1]})
    buf = np.empty((T + 1, B, 6, H), dtype=dt)  # (T+1, B, 6, H)
    ds_c = buf[:, :, 0]  # (T+1, B, H) view
    ds_c[T] = carry[:, H:]
    CF, GA, OP, HPC = buf[:T, :, 0:4], buf[:T, :, 1:5].reshape(T, B, 4 * H), buf[:T, :, 4:6], buf[:T, :, 5]
    delta = np.empty_like(dh)  # (T, B, H)
    delta4 = delta[:, :, None, :]  # (T, B, 1, H) view
    dc4 = np.empty((T, B, 1, H), dtype=dt)  # (T, B, 1, H) dL/dc_t
    dc = dc4[:, :, 0]  # (T, B, H) view
    ds_h = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    ds_h[T] = carry[:, :H]
    W_hh = np.ascontiguousarray(layer.W_hh)  # (4H, H)
    for t in range(T - 1, -1, -1):
        np.add(dh[t], ds_h[t + 1], out=delta[t])  # dL/dh_t = from above + through time
        np.multiply(delta4[t], Q[t], out=OP[t])  # back through h_t = o tanh(c_t): the o gate and c_t's share
        np.add(HPC[t], ds_c[t + 1], out=dc[t])  # dL/dc_t = through h_t + through time
        np.multiply(dc4[t], P4[t], out=CF[t])  # back through c_t = f c_{t-1} + i g: i, f, g and c_{t-1}
        s = ds_h[t]
        if live is None:
            np.dot(GA[t], W_hh, out=s)  # back through W_hh h_{t-1}
        elif live[t]:
            np.dot(GA[t], W_hh, out=s)
            np.multiply(s, xi[t], out=s)  # truncation: xi_t, on h and c alike
            np.multiply(ds_c[t], xi[t], out=ds_c[t])
        else:
            s.fill(0)
            ds_c[t].fill(0)
    G = GA.reshape(T * B, 4 * H)  # (T B, 4H) view, rows 6H apart
    dW_ih, dW_hh, db, dx = _big_products(
        G, run.x.reshape(T * B, D), run.h[:T].reshape(T * B, H), layer.W_ih if need_dx else None
    )
    return LayerGrads(dW_ih, dW_hh, db, db.copy(), None if dx is None else dx.reshape(T, B, D), delta, ds_h, ds_c)

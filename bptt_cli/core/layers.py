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

- they keep every per-step array feature-major, (G H, B): the product of a step is W_hh h_{t-1}
  with h_{t-1} as (H, B), so each gate's block (H, B) is contiguous. numpy's element-wise calls
  on the (B, H) column blocks of (B, G H) rows are several times slower at B > 1 (one inner loop
  per row); at B = 1 the two layouts are the same memory. What they return has the reference's
  shapes, as views of that storage (`LayerRun.rows` keeps a C-contiguous h for the products);
- they go in cache-sized chunks of steps (CHUNK_BYTES);
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
    rows : (T + 1, B, H) h as a C-contiguous array, when `h` is a view of the fast kernels' own layout
        (see the module docstring); None for the reference, whose h is one already
    store : the fast kernels' own arrays in their feature-major layout, which `backward` reads (None
        for the reference): 'h' (T + 1, H, B); gru 'Z' (T, 3H, B) = [r; z; n] and 'hn' (T, H, B);
        lstm 'G' (T + 1, 5, H, B) = step t's [o, i, f, g] and c_t, and 'tc' (T, H, B)

    The fast kernels' h, c and gates are views of that storage: shape (T, B, H), memory (T, H, B).
    """

    kind: str
    x: np.ndarray
    h: np.ndarray
    c: np.ndarray | None
    gates: dict[str, np.ndarray]
    act: Activation | None = None
    rows: np.ndarray | None = None
    store: dict[str, np.ndarray] | None = None

    @property
    def h_rows(self) -> np.ndarray:
        """h_0..h_T (T + 1, B, H), C-contiguous: what the products over all (t, b) rows read."""
        return self.h if self.rows is None else self.rows

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
    ds_c : (T + 1, B, H) the same for c_t (lstm)
    ds0 : (B, LS) dL/ds_0, what the layer sends back to its initial state
    dh, ds_h and ds_c are None when the caller did not ask to keep them (`keep`), ds_c always for a
    GRU or an RNN.
    """

    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    dx: np.ndarray | None
    dh: np.ndarray | None
    ds_h: np.ndarray | None
    ds_c: np.ndarray | None
    ds0: np.ndarray


KEEP_ALL = frozenset({"dh", "ds_h", "ds_c"})


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
    keep: frozenset[str] = KEEP_ALL,
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
    keep : which of the per-step arrays 'dh', 'ds_h', 'ds_c' to return (the others are None)

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
    ds0 = ds_h[0].copy() if ds_c is None else np.concatenate([ds_h[0], ds_c[0]], axis=1)  # (B, LS)
    kept = {name: v if name in keep else None for name, v in (("dh", delta), ("ds_h", ds_h), ("ds_c", ds_c))}
    return LayerGrads(dW_ih, dW_hh, db_ih, db_hh, dx, ds0=ds0, **kept)


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
    kind = run.kind
    names = {"rnn": ("fp",), "gru": ("cn", "cr", "cz", "cnr", "z"), "lstm": ("f", "pi", "pf", "pg", "po", "pc")}[kind]
    out = {} if out is None else out
    h_prev = run.h[lo:hi]  # (k, B, H)
    for name in names:
        if name not in out:
            # empty_like keeps h's memory order: element-wise calls are fast only when every operand shares it
            out[name] = np.empty_like(h_prev)  # (k, B, H)
    if kind == "rnn":
        run.act.fprime(run.h[lo + 1 : hi + 1], out["fp"])
        return out
    g = {name: v[lo:hi] for name, v in run.gates.items()}  # (k, B, H) each
    tmp = np.empty_like(h_prev)  # (k, B, H)
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


# A chunk of steps is about this many bytes of the widest per-step buffer: the forward computes each
# chunk's input projection right before its steps, the backward each chunk's gate derivatives right
# before and its share of the parameter gradients right after, while the chunk is in cache. The
# backward's scratch buffers are one chunk long and reused.
CHUNK_BYTES = 1 << 19


def chunk_steps(seq_len: int, batch: int, width: int, itemsize: int, chunk_bytes: int | None = None) -> int:
    """Steps per chunk: `chunk_bytes` (default CHUNK_BYTES) of a (K, B, width) buffer, at least 1, at most T."""
    return max(1, min(seq_len, (chunk_bytes or CHUNK_BYTES) // (batch * width * itemsize)))


def forward(
    kind: str,
    layer: LayerParams,
    x: np.ndarray,
    s0: np.ndarray,
    act: str | Activation = "tanh",
    *,
    chunk: int | None = None,
) -> LayerRun:
    """The same as `forward_reference`, fast (module docstring); same parameters and result.

    chunk : steps per chunk (default from CHUNK_BYTES); any value gives the same numbers.
    """
    T, B, _ = x.shape
    H = layer.W_hh.shape[1]
    K = chunk or chunk_steps(T, B, GATES[kind] * H, x.itemsize)
    if kind == "rnn":
        return _rnn_forward(layer, x, s0, get_activation(act), K)
    return _gru_forward(layer, x, s0, K) if kind == "gru" else _lstm_forward(layer, x, s0, K)


def backward(
    kind: str,
    layer: LayerParams,
    run: LayerRun,
    dh: np.ndarray,
    carry: np.ndarray | None = None,
    propagate: np.ndarray | None = None,
    *,
    need_dx: bool = True,
    keep: frozenset[str] = KEEP_ALL,
    overwrite_dh: bool = False,
    out: dict[str, np.ndarray] | None = None,
    chunk: int | None = None,
) -> LayerGrads:
    """The same as `backward_reference`, fast (module docstring); same parameters and result.

    run : a forward pass of either version. What `keep` leaves out is never stored: one (H, B) buffer
    serves every step. Fresh memory costs page faults (benchmarks/README.md), hence:
    overwrite_dh : dh may receive dL/dh_t (the result's dh is then its memory); else dh is read only
    out : where to write the kept 'dh' (T, B, H), 'ds_h' and 'ds_c' (T + 1, B, H) instead of new arrays:
        views of feature-major memory (their (T, H, B) transposes contiguous per step), e.g. slices of
        the caller's own array that gathers several layers
    chunk : steps per chunk (default from CHUNK_BYTES); any value gives the same numbers to rounding
    """
    T, B, H = dh.shape
    if run.store is None:  # a reference run: bring it to the fast kernels' layout
        run = _as_fast(run)
    carry = np.zeros((B, layer_state(kind, H)), dtype=dh.dtype) if carry is None else carry
    xi = None if propagate is None else propagate[:, None, :]  # (T, 1, B): scales a step's (H, B) carry
    live = None if propagate is None else propagate.any(axis=1).tolist()  # steps that send anything back
    K = chunk or chunk_steps(T, B, {"rnn": 1, "gru": 5, "lstm": 6}[kind] * H, dh.itemsize)
    fn = {"rnn": _rnn_backward, "gru": _gru_backward, "lstm": _lstm_backward}[kind]
    dhT = dh.transpose(0, 2, 1)  # (T, H, B)
    copied = not dhT[0].flags.c_contiguous  # not one of the fast kernels' arrays: a feature-major copy
    if copied:
        dhT = np.ascontiguousarray(dhT)
    dest = {}
    for name, a in (out or {}).items():
        if name not in keep or (name == "ds_c" and kind != "lstm"):
            raise ValueError(f"`out` {name!r}: not an array this backward keeps")
        dest[name] = a.transpose(0, 2, 1)
        if not dest[name][0].flags.c_contiguous:
            raise ValueError(f"`out` {name!r} must be a view of feature-major memory ((T, H, B) per step)")
    if "dh" not in dest and (overwrite_dh or copied):
        dest["dh"] = dhT
    return fn(layer, run, dhT, carry, xi, live, need_dx, keep, K, dest)


def _view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`a` reshaped without a copy (an `out=` must be the array itself); AttributeError if it would copy."""
    v = a.view()
    v.shape = shape
    return v


def _steps(kept: bool, n: int, H: int, B: int, dtype: np.dtype) -> np.ndarray:
    """(n, H, B) storage for one value per step; when it is not kept, every step is one (H, B) buffer
    (stride 0): each step's value is read only by that step and the next one. Fresh memory costs page
    faults (benchmarks/README.md), so what nobody reads is not allocated."""
    if kept:
        return np.empty((n, H, B), dtype=dtype)
    one = np.empty((H, B), dtype=dtype)
    return np.lib.stride_tricks.as_strided(one, shape=(n, H, B), strides=(0, *one.strides))


def _as_fast(run: LayerRun) -> LayerRun:
    """A reference run with the fast kernels' store (feature-major copies), for `backward`."""

    def cols(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(0, 2, 1))  # (n, H, B)

    T1, B, H = run.h.shape
    store = {"h": cols(run.h)}
    if run.kind == "gru":
        store["Z"] = np.concatenate([cols(run.gates[n]) for n in ("r", "z", "n")], axis=1)  # (T, 3H, B)
        store["hn"] = cols(run.gates["hn"])
    elif run.kind == "lstm":
        G = np.zeros((T1, 5, H, B), dtype=run.h.dtype)  # (T+1, 5, H, B)
        for j, name in enumerate(("o", "i", "f", "g")):
            G[: T1 - 1, j] = cols(run.gates[name])
        G[:, 4] = cols(run.c)
        store.update(G=G, tc=cols(run.gates["tc"]))
    return LayerRun(run.kind, run.x, run.h, run.c, run.gates, run.act, np.ascontiguousarray(run.h), store)


_ALL = slice(None)


def _half(dtype: np.dtype) -> np.ndarray:
    # a 0-d array: numpy converts a Python float on every call, which costs as much as a small product
    return np.array(0.5, dtype=dtype)


def _project(W: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out (k, G H, B) = W x_t^T for the k steps of x (k, B, D): one product per step (numpy's batched
    matmul reads x_t^T in place), or a single product when B = 1 (then both layouts are one memory)."""
    k, B, D = x.shape
    if B == 1:
        np.matmul(x.reshape(k, D), W.T, out=_view(out, (k, W.shape[0])))
    else:
        np.matmul(W, x.transpose(0, 2, 1), out=out)


class _Shares:
    """The parameter gradients' sums over the chunks. Per chunk the gate gradients (k, G H, B) are
    copied once into (G H, k B), in cache, so that G^T X, G^T H_prev and the column sums are single
    products over the chunk's (t, b) rows with the C-contiguous X and H_prev.

    x_rows, h_rows : the rows of G that multiply x_t and h_{t-1} (all of them, but for the GRU)
    """

    def __init__(
        self, GH: int, D: int, H: int, K: int, B: int, dtype: np.dtype, x_rows: slice = _ALL, h_rows: slice = _ALL
    ) -> None:
        nx, nh = len(range(GH)[x_rows]), len(range(GH)[h_rows])
        self.x_rows, self.h_rows = x_rows, h_rows
        self.dW_x, self.dW_h = np.zeros((nx, D), dtype=dtype), np.zeros((nh, H), dtype=dtype)
        self.sums = np.zeros(GH, dtype=dtype)
        self._x, self._h, self._s = np.empty((nx, D), dtype=dtype), np.empty((nh, H), dtype=dtype), np.empty(GH, dtype)
        self._m = np.empty(GH * K * B, dtype=dtype)  # one chunk's gate gradients as (G H, k B)
        self.ones = np.ones(K * B, dtype=dtype)  # (K B,) a product with ones beats sum(axis=1)

    def add(self, G: np.ndarray, X: np.ndarray, H_prev: np.ndarray) -> None:
        """G (k, G H, B) the chunk's gate gradients; X (k B, D), H_prev (k B, H) C-contiguous."""
        k, GH, B = G.shape
        if B == 1:
            M = _view(G, (k, GH)).T  # (G H, k): already (t, b) rows, read in place
        else:
            M = self._m[: GH * k * B].reshape(GH, k, B)
            np.copyto(M, G.transpose(1, 0, 2))
            M = M.reshape(GH, k * B)  # (G H, k B)
        np.matmul(M[self.x_rows], X, out=self._x)
        self.dW_x += self._x
        np.matmul(M[self.h_rows], H_prev, out=self._h)
        self.dW_h += self._h
        np.matmul(M, self.ones[: k * B], out=self._s)
        self.sums += self._s


def _rows(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """a[lo:hi] (k, B, n) as (k B, n), C-contiguous (a copy only when `a` is not)."""
    k, B, n = a[lo:hi].shape
    return np.ascontiguousarray(a[lo:hi]).reshape(k * B, n)


def _grads(acc_W_ih, acc_W_hh, db_ih, db_hh, dx, delta, ds_h, ds_c, keep, c0=None) -> LayerGrads:  # noqa: ANN001
    """LayerGrads from a fast backward's feature-major arrays (views of the kept ones, None for the rest);
    c0 (H, B): an LSTM's dL/dc_0."""

    def rows(a: np.ndarray | None, name: str) -> np.ndarray | None:
        return a.transpose(0, 2, 1) if a is not None and name in keep else None

    ds0 = ds_h[0].T.copy() if c0 is None else np.concatenate([ds_h[0].T, c0.T], axis=1)  # (B, LS)
    dxv = None if dx is None else dx.transpose(0, 2, 1)
    return LayerGrads(
        acc_W_ih, acc_W_hh, db_ih, db_hh, dxv, rows(delta, "dh"), rows(ds_h, "ds_h"), rows(ds_c, "ds_c"), ds0
    )


def _rnn_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray, act: Activation, K: int) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    hT = np.empty((T + 1, H, B), dtype=dt)  # (T+1, H, B)
    hT[0] = s0.T
    rows = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    rows[0] = s0
    b = np.repeat((layer.b_ih + layer.b_hh)[:, None], B, axis=1)  # (H, B): a same-shape add is the fast one
    W_hh = np.ascontiguousarray(layer.W_hh)  # (H, H)
    tmp = np.empty((H, B), dtype=dt)  # (H, B)
    f = act.f
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, T, K):
            hi = min(T, lo + K)
            a = hT[lo + 1 : hi + 1]  # (k, H, B): the input projection into the state buffer
            _project(layer.W_ih, x[lo:hi], a)
            a += b
            for t in range(lo, hi):
                cur = hT[t + 1]
                np.dot(W_hh, hT[t], out=tmp)
                np.add(cur, tmp, out=cur)  # a_t
                if f is not None:
                    f(cur, out=cur)  # h_t = f(a_t)
            rows[lo + 1 : hi + 1] = hT[lo + 1 : hi + 1].transpose(0, 2, 1)
    return LayerRun("rnn", x, hT.transpose(0, 2, 1), None, {}, act, rows, {"h": hT})


def _rnn_backward(layer, run, dh, carry, xi, live, need_dx, keep, K, dest) -> LayerGrads:  # noqa: ANN001
    """See `backward`; dest: where 'dh', 'ds_h', 'ds_c' go (feature-major) when not into new arrays."""
    T, H, B = dh.shape
    D = run.x.shape[2]
    dt = dh.dtype
    g = np.empty((K, H, B), dtype=dt)  # (K, H, B) f'(a_t), then g_t = f'(a_t) * delta_t
    delta = dest["dh"] if "dh" in dest else _steps("dh" in keep, T, H, B, dt)  # (T, H, B)
    ds = dest["ds_h"] if "ds_h" in dest else _steps("ds_h" in keep, T + 1, H, B, dt)  # (T+1, H, B)
    ds[T] = carry.T
    dx = np.empty((T, D, B), dtype=dt) if need_dx else None  # (T, D, B)
    W_hT = np.ascontiguousarray(layer.W_hh.T)  # (H, H)
    W_iT = np.ascontiguousarray(layer.W_ih.T)  # (D, H)
    acc = _Shares(H, D, H, K, B, dt)
    gv = g.transpose(0, 2, 1)  # (K, B, H) view for linearise
    for hi in range(T, 0, -K):
        lo = max(0, hi - K)
        k = hi - lo
        linearise(run, lo, hi, {"fp": gv[:k]})
        for t in range(hi - 1, lo - 1, -1):
            d, gj, s = delta[t], g[t - lo], ds[t]
            np.add(dh[t], ds[t + 1], out=d)  # dL/dh_t = from above + through time
            np.multiply(gj, d, out=gj)  # back through f
            if live is None:
                np.dot(W_hT, gj, out=s)  # back through W_hh h_{t-1}
            elif live[t]:
                np.dot(W_hT, gj, out=s)
                np.multiply(s, xi[t], out=s)  # truncation: xi_t
            else:
                s.fill(0)
        acc.add(g[:k], _rows(run.x, lo, hi), _rows(run.h_rows, lo, hi))
        if dx is not None:
            np.matmul(W_iT, g[:k], out=dx[lo:hi])  # (k, D, B)
    return _grads(acc.dW_x, acc.dW_h, acc.sums, acc.sums.copy(), dx, delta, ds, None, keep)


def _gru_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray, K: int) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    half = _half(dt)
    # r and z feed sigmoids: their rows are halved so that tanh(0.5 a) comes out of the products
    scale = np.ones((3 * H, 1), dtype=dt)  # (3H, 1)
    scale[: 2 * H] = 0.5
    W_i = layer.W_ih * scale  # (3H, D)
    b_i = layer.b_ih + np.concatenate([layer.b_hh[: 2 * H], np.zeros(H, dtype=dt)])  # (3H,) b_hn stays inside r * hn
    b_i = np.repeat((b_i * scale[:, 0])[:, None], B, axis=1)  # (3H, B)
    W_h = np.ascontiguousarray(layer.W_hh * scale)  # (3H, H)
    b_hn = np.repeat(layer.b_hh[2 * H :, None], B, axis=1)  # (H, B)
    Z = np.empty((T, 3 * H, B), dtype=dt)  # (T, 3H, B): the input projection, then [r; z; n] in place
    hT = np.empty((T + 1, H, B), dtype=dt)  # (T+1, H, B)
    hT[0] = s0.T
    rows = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    rows[0] = s0
    hn = np.empty((T, H, B), dtype=dt)  # (T, H, B) W_hn h_{t-1} + b_hn
    tmp = np.empty((3 * H, B), dtype=dt)  # (3H, B) W_hh h_{t-1}
    t_rz, t_n = tmp[: 2 * H], tmp[2 * H :]
    RZ, R, ZZ, N = Z[:, : 2 * H], Z[:, :H], Z[:, H : 2 * H], Z[:, 2 * H :]  # (T, ., B) views, contiguous per step
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, T, K):
            hi = min(T, lo + K)
            _project(W_i, x[lo:hi], Z[lo:hi])
            Z[lo:hi] += b_i
            for t in range(lo, hi):
                prev, cur, rz, n = hT[t], hT[t + 1], RZ[t], N[t]
                np.dot(W_h, prev, out=tmp)
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
            rows[lo + 1 : hi + 1] = hT[lo + 1 : hi + 1].transpose(0, 2, 1)
    gates = {name: v.transpose(0, 2, 1) for name, v in (("r", R), ("z", ZZ), ("n", N), ("hn", hn))}
    return LayerRun("gru", x, hT.transpose(0, 2, 1), None, gates, None, rows, {"h": hT, "Z": Z, "hn": hn})


def _gru_coefficients(Z: np.ndarray, hn: np.ndarray, h_prev: np.ndarray, P: np.ndarray, tmp: np.ndarray) -> None:
    """`linearise`'s GRU factors of k steps in the fast kernels' layout, into P (k, 5, H, B) = [cn, cr,
    cz, cnr, z], from Z (k, 3, H, B) = [r, z, n], hn and h_{t-1} (k, H, B); tmp (k, 2, H, B) scratch.
    Written on whole gate blocks, so that each call covers as many gates as it can."""
    r, z, n = Z[:, 0], Z[:, 1], Z[:, 2]
    cn, cr, cz, cnr = P[:, 0], P[:, 1], P[:, 2], P[:, 3]
    np.subtract(1, Z[:, :2], out=tmp)  # [1 - r, 1 - z]
    np.multiply(n, n, out=cn)
    np.subtract(1, cn, out=cn)
    np.multiply(cn, tmp[:, 1], out=cn)  # cn = (1 - z)(1 - n^2)
    np.subtract(h_prev, n, out=cz)
    np.multiply(cz, z, out=cz)
    np.multiply(cz, tmp[:, 1], out=cz)  # cz = (h_{t-1} - n) z (1 - z)
    np.multiply(cn, r, out=cnr)  # cnr = cn r
    np.multiply(cnr, hn, out=cr)
    np.multiply(cr, tmp[:, 0], out=cr)  # cr = cn hn r (1 - r)
    np.copyto(P[:, 4], z)


def _gru_backward(layer, run, dh, carry, xi, live, need_dx, keep, K, dest) -> LayerGrads:  # noqa: ANN001
    """See `backward`; dest: where 'dh', 'ds_h', 'ds_c' go (feature-major) when not into new arrays."""
    T, H, B = dh.shape
    D = run.x.shape[2]
    dt = dh.dtype
    Zs, hn_s, h_s = run.store["Z"], run.store["hn"], run.store["h"]
    Z4 = _view(Zs, (T, 3, H, B))  # (T, 3, H, B) [r, z, n]
    # per step, one broadcast product delta_t * P_t writes the five slots [a_n (input's share), a_r, a_z,
    # hn, h_{t-1} directly]: slots 0..2 are d/d(W_ih x_t + b_ih) in the order (n, r, z), slots 1..3
    # d/d(W_hh h_{t-1} + b_hh) in PyTorch's order (r, z, n), read in place by the product with W_hh^T
    P = np.empty((K, 5, H, B), dtype=dt)  # (K, 5, H, B) [cn, cr, cz, cnr, z] of one chunk
    tmp = np.empty((K, 2, H, B), dtype=dt)  # (K, 2, H, B)
    buf = np.empty((K, 5, H, B), dtype=dt)  # (K, 5, H, B)
    GH = _view(buf, (K, 5 * H, B))[:, H : 4 * H]  # (K, 3H, B) view
    G4 = _view(buf, (K, 5 * H, B))[:, : 4 * H]  # (K, 4H, B) view: slots 0..3, the parameters' share
    direct = buf[:, 4]  # (K, H, B) view: z * delta_t
    delta = dest["dh"] if "dh" in dest else _steps("dh" in keep, T, H, B, dt)  # (T, H, B)
    ds = dest["ds_h"] if "ds_h" in dest else _steps("ds_h" in keep, T + 1, H, B, dt)  # (T+1, H, B)
    ds[T] = carry.T
    dx = np.empty((T, D, B), dtype=dt) if need_dx else None  # (T, D, B)
    W_hT = np.ascontiguousarray(layer.W_hh.T)  # (H, 3H)
    W_nrzT = np.ascontiguousarray(np.concatenate([layer.W_ih[2 * H :], layer.W_ih[: 2 * H]]).T)  # (D, 3H) as slots 0..2
    acc = _Shares(4 * H, D, H, K, B, dt, x_rows=slice(0, 3 * H), h_rows=slice(H, 4 * H))  # slots 0..2 x_t, 1..3 h_{t-1}
    for hi in range(T, 0, -K):
        lo = max(0, hi - K)
        k = hi - lo
        _gru_coefficients(Z4[lo:hi], hn_s[lo:hi], h_s[lo:hi], P[:k], tmp[:k])
        for t in range(hi - 1, lo - 1, -1):
            j = t - lo
            s = ds[t]
            np.add(dh[t], ds[t + 1], out=delta[t])  # dL/dh_t = from above + through time
            np.multiply(delta[t], P[j], out=buf[j])  # every gate gradient of the step at once
            if live is None:
                np.dot(W_hT, GH[j], out=s)  # back through W_hh h_{t-1}
                np.add(s, direct[j], out=s)  # and through z h_{t-1}
            elif live[t]:
                np.dot(W_hT, GH[j], out=s)
                np.add(s, direct[j], out=s)
                np.multiply(s, xi[t], out=s)  # truncation: xi_t
            else:
                s.fill(0)
        acc.add(G4[:k], _rows(run.x, lo, hi), _rows(run.h_rows, lo, hi))
        if dx is not None:
            np.matmul(W_nrzT, G4[:k, : 3 * H], out=dx[lo:hi])  # (k, D, B)
    sums = acc.sums  # (4H,) column sums of slots 0..3
    dW_ih = np.concatenate([acc.dW_x[H:], acc.dW_x[:H]])  # (3H, D) back to (r, z, n)
    db_ih = np.concatenate([sums[H : 3 * H], sums[:H]])  # (3H,)
    return _grads(dW_ih, acc.dW_h, db_ih, sums[H:].copy(), dx, delta, ds, None, keep)


# The LSTM's gates inside the fast kernels: (o, i, f, g), PyTorch's rows (i, f, g, o) = 0, 1, 2, 3
_LSTM_ORDER = (3, 0, 1, 2)


def _lstm_forward(layer: LayerParams, x: np.ndarray, s0: np.ndarray, K: int) -> LayerRun:
    T, B, D = x.shape
    H = layer.W_hh.shape[1]
    dt = layer.W_hh.dtype
    half = _half(dt)
    rows_of = np.concatenate([np.arange(j * H, (j + 1) * H) for j in _LSTM_ORDER])  # (4H,) PyTorch rows, our order
    scale = np.ones((4 * H, 1), dtype=dt)  # (4H, 1)
    scale[: 3 * H] = 0.5  # o, i, f feed sigmoids: halved, so that one tanh call covers every gate
    W_i = layer.W_ih[rows_of] * scale  # (4H, D)
    b = np.repeat(((layer.b_ih + layer.b_hh)[rows_of] * scale[:, 0])[:, None], B, axis=1)  # (4H, B)
    W_h = np.ascontiguousarray(layer.W_hh[rows_of] * scale)  # (4H, H)
    # step t's block holds its gates (o, i, f, g) and, in slot 4, c_t: [g, c_{t-1}] sit side by side
    Gb = np.empty((T + 1, 5, H, B), dtype=dt)  # (T+1, 5, H, B)
    G4 = _view(Gb, (T + 1, 5 * H, B))[:T, : 4 * H]  # (T, 4H, B) view, contiguous per step
    SIG = _view(Gb, (T + 1, 5 * H, B))[:T, : 3 * H]  # (T, 3H, B) view: o, i, f
    IF, GC, OG, C = Gb[:T, 1:3], Gb[:T, 3:5], Gb[:T, 0], Gb[:, 4]  # (T, 2, H, B), (T, 2, H, B), (T, H, B), (T+1, H, B)
    hT = np.empty((T + 1, H, B), dtype=dt)  # (T+1, H, B)
    hT[0], C[0] = s0[:, :H].T, s0[:, H:].T
    Gb[T, :4] = 0  # the row past the last step holds only c_T
    rows = np.empty((T + 1, B, H), dtype=dt)  # (T+1, B, H)
    rows[0] = s0[:, :H]
    tc = np.empty((T, H, B), dtype=dt)  # (T, H, B) tanh(c_t)
    tmp = np.empty((4 * H, B), dtype=dt)  # (4H, B) W_hh h_{t-1}
    pair = np.empty((2, H, B), dtype=dt)  # (2, H, B) [i g, f c_{t-1}]
    ig, fc = pair[0], pair[1]
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, T, K):
            hi = min(T, lo + K)
            _project(W_i, x[lo:hi], G4[lo:hi])
            G4[lo:hi] += b
            for t in range(lo, hi):
                a, s, c = G4[t], SIG[t], C[t + 1]
                np.dot(W_h, hT[t], out=tmp)
                np.add(a, tmp, out=a)
                np.tanh(a, out=a)
                np.multiply(s, half, out=s)
                np.add(s, half, out=s)  # o, i, f = sigmoid(a_o), sigmoid(a_i), sigmoid(a_f); g = tanh(a_g)
                np.multiply(IF[t], GC[t], out=pair)
                np.add(ig, fc, out=c)  # c_t = f c_{t-1} + i g
                np.tanh(c, out=tc[t])
                np.multiply(OG[t], tc[t], out=hT[t + 1])  # h_t = o tanh(c_t)
            rows[lo + 1 : hi + 1] = hT[lo + 1 : hi + 1].transpose(0, 2, 1)
    gates = {name: Gb[:T, j].transpose(0, 2, 1) for name, j in (("i", 1), ("f", 2), ("g", 3), ("o", 0))}
    gates["tc"] = tc.transpose(0, 2, 1)
    store = {"h": hT, "G": Gb, "tc": tc}
    return LayerRun("lstm", x, hT.transpose(0, 2, 1), C.transpose(0, 2, 1), gates, None, rows, store)


def _lstm_coefficients(G: np.ndarray, tc: np.ndarray, P4: np.ndarray, Q: np.ndarray, tmp: np.ndarray) -> None:
    """`linearise`'s LSTM factors of k steps in the fast kernels' layout, into P4 (k, 4, H, B) = [f, pi,
    pf, pg] and Q (k, 2, H, B) = [po, pc], from G (k, 5, H, B) = [o, i, f, g, c_{t-1}] and tanh(c_t)
    (k, H, B); tmp (k, 3, H, B) scratch. The three sigmoid gates sit side by side, and [g, c_{t-1}]
    match [i, f]: one call covers several gates."""
    o, i, g = G[:, 0], G[:, 1], G[:, 3]
    np.subtract(1, G[:, :3], out=tmp)
    np.multiply(tmp, G[:, :3], out=tmp)  # sigma' = sigma (1 - sigma) of o, i, f
    np.multiply(tmp[:, 1:3], G[:, 3:5], out=P4[:, 1:3])  # [pi, pf] = [i', f'] * [g, c_{t-1}]
    np.multiply(tmp[:, 0], tc, out=Q[:, 0])  # po = o' tanh(c_t)
    pg, pc = P4[:, 3], Q[:, 1]
    np.multiply(g, g, out=pg)
    np.subtract(1, pg, out=pg)
    np.multiply(pg, i, out=pg)  # pg = i (1 - g^2)
    np.multiply(tc, tc, out=pc)
    np.subtract(1, pc, out=pc)
    np.multiply(pc, o, out=pc)  # pc = o (1 - tanh(c_t)^2)
    np.copyto(P4[:, 0], G[:, 2])  # f


def _lstm_backward(layer, run, dh, carry, xi, live, need_dx, keep, K, dest) -> LayerGrads:  # noqa: ANN001
    """See `backward`; dest: where 'dh', 'ds_h', 'ds_c' go (feature-major) when not into new arrays."""
    T, H, B = dh.shape
    D = run.x.shape[2]
    dt = dh.dtype
    Gs, tc_s = run.store["G"], run.store["tc"]
    # block j of the buffer: slot 0 what step t + 1 sends back to c_t (dL/dc_t f), slots 1..4 the gate
    # gradients in PyTorch's order (i, f, g, o), read in place by the products, slot 5 dL/dh_t pc;
    # block k's slot 0 the c carry from above the chunk. Two broadcast products per step fill a block:
    # dL/dh_t * [po, pc] -> slots 4, 5 and dL/dc_t * [f, pi, pf, pg] -> slots 0..3.
    P4 = np.empty((K, 4, H, B), dtype=dt)  # (K, 4, H, B) [f, pi, pf, pg] of one chunk
    Q = np.empty((K, 2, H, B), dtype=dt)  # (K, 2, H, B) [po, pc]
    tmp = np.empty((K, 3, H, B), dtype=dt)  # (K, 3, H, B)
    buf = np.empty((K + 1, 6, H, B), dtype=dt)  # (K+1, 6, H, B)
    CF, OP, HPC, DSC = buf[:, 0:4], buf[:, 4:6], buf[:, 5], buf[:, 0]  # views
    GA = _view(buf, (K + 1, 6 * H, B))[:, H : 5 * H]  # (K+1, 4H, B) view, contiguous per step
    delta = dest["dh"] if "dh" in dest else _steps("dh" in keep, T, H, B, dt)  # (T, H, B)
    dc = np.empty((K, H, B), dtype=dt)  # (K, H, B) dL/dc_t
    ds_h = dest["ds_h"] if "ds_h" in dest else _steps("ds_h" in keep, T + 1, H, B, dt)  # (T+1, H, B)
    ds_c = dest["ds_c"] if "ds_c" in dest else np.empty((T + 1, H, B), dtype=dt) if "ds_c" in keep else None
    ds_h[T] = carry[:, :H].T
    c_carry = np.ascontiguousarray(carry[:, H:].T)  # (H, B) what comes back to the chunk's last c
    dx = np.empty((T, D, B), dtype=dt) if need_dx else None  # (T, D, B)
    W_hT = np.ascontiguousarray(layer.W_hh.T)  # (H, 4H)
    W_iT = np.ascontiguousarray(layer.W_ih.T)  # (D, 4H)
    acc = _Shares(4 * H, D, H, K, B, dt)
    if ds_c is not None:
        ds_c[T] = c_carry
    for hi in range(T, 0, -K):
        lo = max(0, hi - K)
        k = hi - lo
        _lstm_coefficients(Gs[lo:hi], tc_s[lo:hi], P4[:k], Q[:k], tmp[:k])
        DSC[k] = c_carry
        for t in range(hi - 1, lo - 1, -1):
            j = t - lo
            s = ds_h[t]
            np.add(dh[t], ds_h[t + 1], out=delta[t])  # dL/dh_t = from above + through time
            np.multiply(delta[t], Q[j], out=OP[j])  # back through h_t = o tanh(c_t): the o gate and c_t's share
            np.add(HPC[j], DSC[j + 1], out=dc[j])  # dL/dc_t = through h_t + through time
            np.multiply(dc[j], P4[j], out=CF[j])  # back through c_t = f c_{t-1} + i g: i, f, g and c_{t-1}
            if live is None:
                np.dot(W_hT, GA[j], out=s)  # back through W_hh h_{t-1}
            elif live[t]:
                np.dot(W_hT, GA[j], out=s)
                np.multiply(s, xi[t], out=s)  # truncation: xi_t, on h and c alike
                np.multiply(DSC[j], xi[t], out=DSC[j])
            else:
                s.fill(0)
                DSC[j].fill(0)
        np.copyto(c_carry, DSC[0])
        if ds_c is not None:
            ds_c[lo:hi] = DSC[:k]
        acc.add(GA[:k], _rows(run.x, lo, hi), _rows(run.h_rows, lo, hi))
        if dx is not None:
            np.matmul(W_iT, GA[:k], out=dx[lo:hi])  # (k, D, B)
    return _grads(acc.dW_x, acc.dW_h, acc.sums, acc.sums.copy(), dx, delta, ds_h, ds_c, keep, c_carry)

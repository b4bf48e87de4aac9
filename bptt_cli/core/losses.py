"""Per-step losses and their derivatives, one object each.

L = (1/B) * sum_{t,b} m_{t,b} * l(z_{t,b}, target_{t,b})     (sum over time, mean over batch)

xent        : softmax cross-entropy on the outputs y (T, B, V), integer targets (T, B)
mse         : mean over V of (y - target)^2, float targets (T, B, V)
half-square : 1/2 ||h_t||^2 on the states (T, B, H), no targets and no output layer
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.core.validate import check_real


@dataclass(frozen=True)
class Loss:
    """A per-step loss: its name, whether it reads the outputs y (else the states h), and the
    form its targets take ('classes' (T, B) int, 'values' (T, B, V) float, or None)."""

    name: str
    uses_output: bool
    targets: str | None

    def __str__(self) -> str:
        return self.name


XENT = Loss("xent", True, "classes")
MSE = Loss("mse", True, "values")
HALF_SQUARE = Loss("half-square", False, None)

LOSS_OBJECTS: dict[str, Loss] = {loss.name: loss for loss in (XENT, MSE, HALF_SQUARE)}
LOSSES = tuple(LOSS_OBJECTS)


def get_loss(loss: str | Loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    try:
        return LOSS_OBJECTS[loss]
    except (KeyError, TypeError):
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}; got {loss!r}") from None


def check_loss(loss: str | Loss) -> str:
    return get_loss(loss).name


def uses_output_layer(loss: str | Loss) -> bool:
    return get_loss(loss).uses_output


def check_targets(loss: str | Loss, targets: np.ndarray | None, T: int, B: int, V: int) -> np.ndarray | None:
    """Targets in the form the loss needs: int (T, B) in 0..V-1, float (T, B, V), or None."""
    lo = get_loss(loss)
    if lo.targets is None:
        if targets is not None:
            raise ValueError(f"`targets` must be None for the {lo.name} loss (it has no targets)")
        return None
    if targets is None:
        raise ValueError(f"`targets` are required for the {lo.name} loss")
    targets = np.asarray(targets)
    if V == 0:
        raise ValueError(f"the {lo.name} loss needs an output layer, but `W_y` has 0 rows (V = 0)")
    if lo.targets == "classes":
        if targets.shape != (T, B):
            raise ValueError(f"`targets` for xent must have shape (T, B) = {(T, B)}; got {targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            if not np.issubdtype(targets.dtype, np.floating) or not np.all(targets == np.round(targets)):
                raise ValueError(f"`targets` for xent must be integer class indices; got dtype {targets.dtype}")
            targets = targets.astype(np.int64)
        if targets.size and (targets.min() < 0 or targets.max() >= V):
            raise ValueError(
                f"`targets` must be class indices in 0..{V - 1}; got values in {targets.min()}..{targets.max()}"
            )
        return targets.astype(np.intp, copy=False)
    if targets.shape != (T, B, V):
        raise ValueError(f"`targets` for mse must have shape (T, B, V) = {(T, B, V)}; got {targets.shape}")
    return check_real("targets", targets)


def check_mask(mask: np.ndarray | None, T: int, B: int, dtype: np.dtype) -> np.ndarray | None:
    """A (T, B) weight per step and sequence, finite and non-negative; None means all ones."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (T, B):
        raise ValueError(f"`mask` must have shape (T, B) = {(T, B)}; got {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.number) or mask.dtype == np.bool_) or np.iscomplexobj(mask):
        raise ValueError(f"`mask` must be real or boolean; got dtype {mask.dtype}")
    mask = mask.astype(dtype)
    if not np.all(np.isfinite(mask)) or np.any(mask < 0):
        raise ValueError("`mask` must be finite and non-negative")
    return mask


def loss_and_grad(
    loss: str | Loss,
    z: np.ndarray,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    overwrite: bool = False,
) -> tuple[float, np.ndarray]:
    """The loss L and dL/dz.

    Parameters
    ----------
    loss : 'xent' | 'mse' | 'half-square' (or the Loss object)
    z : (T, B, V) outputs y for xent and mse; (T, B, H) states h_1..h_T for half-square
    targets, mask : already checked by `check_targets` / `check_mask`
    overwrite : reuse z's buffer for the gradient (saves one (T, B, V) array)

    Returns
    -------
    (L, dz) with dz of z's shape and dtype; 1/B and the mask are already applied.
    """
    lo = get_loss(loss)
    T, B, V = z.shape
    N = T * B
    # the per-(t, b) weight: the scalar 1/B without a mask (no (T, B) array, no broadcast product)
    w = None if mask is None else (mask / z.dtype.type(B)).reshape(N, 1)  # (N, 1)
    scale = z.dtype.type(1.0 / B)
    # rows of V values; in place in z only when z is one contiguous block (else reshape would copy)
    dz = z if overwrite and z.flags.c_contiguous else np.array(z, order="C")
    d2 = dz.reshape(N, V)  # (N, V) view of dz
    if lo is XENT:
        flat = dz.reshape(-1)  # (N V,) view of dz
        pick = np.arange(0, N * V, V) + targets.reshape(N)  # (N,) flat index of each row's target
        # log-softmax, stable: shift by the row max, nll = log sum exp(z) - z_target
        d2 -= d2.max(axis=1, keepdims=True)
        z_true = flat[pick]  # (N,)
        np.exp(d2, out=d2)
        sum_exp = d2 @ np.ones(V, dtype=d2.dtype)  # (N,) row sums; BLAS gemv beats sum(axis=1) here
        nll = np.log(sum_exp)
        nll -= z_true
        d2 /= sum_exp[:, None]  # softmax p
        # back through softmax + log: dl/dy = p - onehot(target)
        flat[pick] -= 1
    elif lo is MSE:
        d2 -= targets.reshape(N, V)  # residual r = y - target
        nll = np.einsum("nv,nv->n", d2, d2) / z.dtype.type(V)  # mean over V of r^2
        # back through the mean of squares: d/dy mean_v r^2 = 2 r / V
        d2 *= z.dtype.type(2.0 / V)
    else:  # half-square
        nll = z.dtype.type(0.5) * np.einsum("nh,nh->n", d2, d2)
        # back through 1/2 ||h||^2: the gradient is h itself, already in dz
    if w is None:
        L = float(nll.sum()) / B
        d2 *= scale
    else:
        L = float(np.dot(w[:, 0], nll))
        d2 *= w
    return L, dz


def xent_columns(yT: np.ndarray, targets: np.ndarray, batch: int, mask: np.ndarray | None = None) -> float:
    """Softmax cross-entropy on outputs stored one column per sample; overwrites yT with dL/dy.

    Parameters
    ----------
    yT : (V, N) C-contiguous outputs, column n the logits of sample n = (t, b)
    targets : (N,) int class indices in 0..V-1 (already checked)
    batch : B; the loss is a mean over the batch, as in `loss_and_grad`
    mask : (N,) per-sample weight (already checked), None for all ones

    Returns
    -------
    L = sum_n w_n nll_n with w_n = mask_n / B; yT then holds w_n (p_n - onehot(target_n)) in column n.

    The same numbers as `loss_and_grad('xent', ...)` on yT.T (to rounding), used by the fused
    backward of core/fast.py: in this layout the per-sample max and sum run down the columns,
    which numpy vectorises across samples (benchmarks/README.md has the measurement).
    """
    V, N = yT.shape
    flat = yT.reshape(-1)  # (V N,) view (yT is contiguous)
    pick = targets * N + np.arange(N)  # (N,) flat index of (target_n, n)
    # log-softmax, stable: shift by the column max, nll = log sum exp(z) - z_target
    yT -= yT.max(axis=0)
    z_true = flat[pick]  # (N,)
    np.exp(yT, out=yT)
    sum_exp = yT.sum(axis=0)  # (N,)
    nll = np.log(sum_exp)
    nll -= z_true
    yT /= sum_exp  # softmax p
    # back through softmax + log: dl/dy = p - onehot(target)
    flat[pick] -= 1
    if mask is None:
        yT *= yT.dtype.type(1.0 / batch)
        return float(nll.sum()) / batch
    w = mask / yT.dtype.type(batch)  # (N,)
    yT *= w
    return float(np.dot(w, nll))

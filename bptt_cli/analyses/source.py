"""Where an analysed network and its data come from (the options spectrum, trace and
compare-truncation share).

The network: --model PATH (a bptt checkpoint or its run folder; or a matrix file, W_h with a
fresh input and output layer) or a fresh initialisation (--hidden, --init, --spectral-radius).
The data: the first B sequences of a task's held-out set (--task; a checkpoint brings its own;
the same sequences train's final verdict uses), a file of inputs (--inputs), or random
N(0, s^2) inputs (--input-scale). The initial state: zeros, N(0, 1) per unit, or a file (--h0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.analyses.tasks import TASKS, Batch, Task, heldout_set, make_task, needed_span
from bptt_cli.analyses.text import CLEANINGS
from bptt_cli.core.activations import NAMES as ACTIVATIONS
from bptt_cli.core.cells import Cell, RNNCell
from bptt_cli.core.losses import LOSSES, get_loss
from bptt_cli.core.net import NetParams
from bptt_cli.core.netcell import NetCell
from bptt_cli.core.rnn import INITS, Params, init_params, scale_to_spectral_radius
from bptt_cli.core.validate import OptionError, check_choice, check_float, check_int
from bptt_cli.io.filekind import check_npy_header, npy_claim
from bptt_cli.io.memory import check_fits
from bptt_cli.io.models import ModelFile, open_model

DATA_TASKS = ("random", *TASKS)
H0_CHOICES = ("zeros", "random")  # or the path of a .npy file
DEFAULT_SEQ_LEN = 200  # random inputs
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class ModelOptions:
    """The network to analyse. `activation` None: the checkpoint's, else tanh."""

    model: Path | None = None
    key: str | None = None
    head: str | None = None
    hidden: int = 64
    init: str = "gaussian"
    spectral_radius: float | None = None
    activation: str | None = None
    input: int = 4
    output: int = 4

    def check_model_options(self) -> None:
        if self.key is not None and self.model is None:
            raise ValueError("`--key` picks an array inside --model's file; give --model too")
        if self.head is not None and self.model is None:
            raise ValueError("`--head` picks the output layer of --model's state dict; give --model too")
        check_int("--hidden", self.hidden)
        check_choice("--init", self.init, INITS)
        if self.spectral_radius is not None:
            check_float("--spectral-radius", self.spectral_radius, lo=0.0)
        if self.activation is not None:
            check_choice("--activation", self.activation, ACTIVATIONS)
        check_int("--input", self.input)
        check_int("--output", self.output)


@dataclass(frozen=True)
class DataOptions:
    """The batch the network runs on. None: the checkpoint's (task, delay, alphabet, seq-len),
    else the defaults (random inputs, delay 10, alphabet 8, T = 200 or the task's)."""

    task: str | None = None
    seq_len: int | None = None
    batch: int | None = None
    input_scale: float = 1.0
    inputs: Path | None = None
    text: Path | None = None
    delay: int | None = None
    alphabet: int | None = None
    h0: str = "zeros"
    text_clean: str = "none"
    targets: Path | None = None
    batch_first: bool = False
    span: int | None = None

    def check_data_options(self) -> None:
        if self.task is not None:
            check_choice("--task", self.task, DATA_TASKS)
        if self.seq_len is not None:
            check_int("--seq-len", self.seq_len)
        if self.batch is not None:
            check_int("--batch", self.batch)
        check_float("--input-scale", self.input_scale, lo=0.0)
        if self.delay is not None:
            check_int("--delay", self.delay)
        if self.alphabet is not None:
            check_int("--alphabet", self.alphabet, min=2)
        if self.inputs is not None and self.task not in (None, "random"):
            raise ValueError(f"`--inputs` gives the inputs itself; it cannot be combined with --task {self.task}")
        if self.targets is not None and self.inputs is None:
            raise ValueError("`--targets` are the targets of --inputs' sequences; give --inputs too")
        if self.span is not None:
            check_int("--span", self.span)
            if self.task not in (None, "random"):
                raise ValueError(f"`--span`: the {self.task} task knows its own span; --span is for your --inputs")
        if self.batch_first and self.inputs is None:
            raise ValueError("`--batch-first` says how --inputs (and --targets) are laid out; give --inputs too")
        if self.text is not None and self.task not in (None, "text"):
            raise ValueError("`--text` applies to --task text only")
        check_choice("--text-clean", self.text_clean, CLEANINGS)
        if self.h0 not in H0_CHOICES and not Path(self.h0).is_file():
            raise ValueError(f"`--h0` must be zeros, random or a .npy file; got {self.h0!r} (no such file)")


@dataclass(frozen=True)
class Source:
    """The network, the data it runs on, and where both came from.

    cell : the network (core/cells.py)
    origin : 'checkpoint' | 'matrix' | 'init'
    model : one line naming the network and where it came from
    task : the Task of the data, None for random or file inputs
    batch : the inputs, targets and mask
    data : one line naming the data
    loss : the loss the targets are for
    saved : the options the checkpoint was made with ({} otherwise)
    h0 : (B, S) the initial state, None for zeros
    start : one line naming the initial state
    """

    cell: Cell
    origin: str
    model: str
    task: Task | None
    batch: Batch
    data: str
    loss: str
    saved: dict[str, Any] = field(default_factory=dict)
    h0: np.ndarray | None = None
    start: str = "h0 = 0"
    user_span: int | None = None  # --span: how far back the user's own targets depend on the inputs

    @property
    def span(self) -> int | None:
        """How far back the task's last loss depends on its inputs (None for random or file inputs)."""
        if self.task is None:
            return self.user_span
        return needed_span(self.task, self.batch)

    def describe(self) -> dict[str, Any]:
        """The network and data as they were resolved (the checkpoint's settings filled in)."""
        cell, x = self.cell, self.batch.x
        activation = getattr(cell, "activation", None)
        return {
            "network": {
                "description": self.model,
                "origin": self.origin,
                "cell": cell.name,
                "activation": None if activation is None else activation.name,
                "hidden": cell.hidden_size,
                "input": cell.input_size,
                "output": cell.output_size,
            },
            "data": {
                "description": self.data,
                "task": None if self.task is None else self.task.name,
                "seq_len": int(x.shape[0]),
                "batch": int(x.shape[1]),
                "loss": self.loss,
                "h0": self.start,
                "span_needed": self.span,
            },
        }


def saved_options(mf: ModelFile | None) -> dict[str, Any]:
    """The options a checkpoint was made with: `bptt train` keeps them under "options"."""
    if mf is None or mf.checkpoint is None:
        return {}
    config = mf.checkpoint.config
    return config["options"] if isinstance(config.get("options"), dict) else config


def _task(opts: DataOptions, saved: dict[str, Any]) -> Task | None:
    saved_task = saved.get("task")
    name = opts.task if opts.task is not None else saved_task if isinstance(saved_task, str) else "random"
    if name not in DATA_TASKS:
        raise ValueError(f"the checkpoint's task {name!r} is not one of {', '.join(TASKS)}")
    if opts.text is not None and name != "text":
        raise OptionError("`--text` applies to --task text only")
    if name == "random" or opts.inputs is not None:
        return None
    text = opts.text if opts.text is not None else saved.get("text")
    if name == "text" and text is not None and opts.text is None and not Path(text).is_file():
        raise ValueError(f"the checkpoint's text file {text} is not there any more; give --text FILE")
    return make_task(
        name,
        seq_len=opts.seq_len if opts.seq_len is not None else saved.get("seq_len") if name == saved_task else None,
        alphabet=opts.alphabet if opts.alphabet is not None else int(saved.get("alphabet") or 8),
        delay=opts.delay if opts.delay is not None else int(saved.get("delay") or 10),
        text=text,
        text_clean=opts.text_clean if opts.text_clean != "none" else str(saved.get("text_clean") or "none"),
    )


def _loss(requested: str | None, task: Task | None, saved: dict[str, Any]) -> str:
    if task is not None:
        if requested is not None and requested != task.loss:
            raise OptionError(f"`--loss` {requested} does not match the {task.name} task's loss {task.loss}")
        return task.loss
    if requested is not None:
        return check_choice("--loss", requested, LOSSES)
    saved_loss = saved.get("loss")
    return saved_loss if saved_loss in LOSSES else "xent"


def _network(
    opts: ModelOptions, mf: ModelFile | None, saved: dict, rng: np.random.Generator, D: int, V: int
) -> tuple[Cell, str, str]:
    """(cell, origin, description)."""
    activation = opts.activation or str(saved.get("activation") or "tanh")
    rescale = ""
    if mf is not None and mf.network is not None:
        return _torch_network(opts, mf)
    if mf is not None and mf.checkpoint is not None and isinstance(mf.checkpoint.params, NetParams):
        if opts.spectral_radius is not None:
            raise ValueError(
                "`--spectral-radius` rescales a vanilla RNN's W_h; this checkpoint holds a stacked network"
            )
        net = mf.checkpoint.params.astype(np.float64)
        return NetCell(net, activation if net.kind == "rnn" else "tanh"), "checkpoint", f"checkpoint {mf.path}"
    if mf is not None and mf.checkpoint is not None:
        params = mf.checkpoint.params.astype(np.float64)
        origin, desc = "checkpoint", f"checkpoint {mf.path}"
    elif mf is not None:
        W_h = mf.matrix
        fresh = init_params(rng, input_size=D, hidden_size=W_h.shape[0], output_size=V)
        params = Params(W_x=fresh.W_x, W_h=W_h, b=fresh.b, W_y=fresh.W_y, c=fresh.c)
        origin, desc = "matrix", f"W_h from {mf.where}, with a random input and output layer"
    else:
        H = opts.hidden
        # W_h, its copies in the eigenvalue and singular value routines, and the other layers
        check_fits(8.0 * (4 * H * H + H * (D + V + 1)), f"--hidden {H}")
        params = init_params(
            rng,
            input_size=D,
            hidden_size=opts.hidden,
            output_size=V,
            init=opts.init,
            spectral_radius=opts.spectral_radius,
        )
        origin = "init"
        desc = f"fresh {opts.init} initialisation, H = {opts.hidden}"
        if opts.spectral_radius is not None:
            desc += f", spectral radius {opts.spectral_radius:g}"
    if opts.spectral_radius is not None and origin != "init":
        params = Params(**{**params.as_dict(), "W_h": scale_to_spectral_radius(params.W_h, opts.spectral_radius)})
        rescale = f", rescaled to spectral radius {opts.spectral_radius:g}"
    return RNNCell(params, activation), origin, desc + rescale


def _torch_network(opts: ModelOptions, mf: ModelFile) -> tuple[Cell, str, str]:
    """The user's PyTorch module as it is: its cell, depth, biases and head (io/torch_state.py);
    an nn.RNN's nonlinearity from --activation (a state dict does not record it) or from bptt's
    own export, and the description says which."""
    net = mf.network
    where = f"--model {mf.path}"
    if opts.spectral_radius is not None:
        raise ValueError(f"{where}: `--spectral-radius` would change your model's W_hh; analyse it as it is")
    if net.kind == "rnn" and net.activation is None:
        raise ValueError(
            f"{where}: an nn.RNN's nonlinearity is not in its state dict: give --activation tanh or relu "
            "(whatever the module was built with)"
        )
    how = ""
    if net.kind == "rnn":
        how = f", {net.activation} {'from the file' if net.activation_from_file else 'as --activation says'}"
    desc = f"{net.describe()}{how}, from {mf.where}"
    vanilla = net.vanilla()
    params = net.params.astype(np.float64)
    if vanilla is not None:
        return RNNCell(vanilla.astype(np.float64), net.activation), "network", desc
    return NetCell(params, net.activation or "tanh"), "network", desc


def _random_targets(rng: np.random.Generator, loss: str, T: int, B: int, V: int) -> np.ndarray | None:
    if loss == "xent":
        return rng.integers(0, V, size=(T, B))
    if loss == "mse":
        return rng.normal(size=(T, B, V))
    return None


def _read_array(path: Path, option: str) -> np.ndarray:
    """A numeric .npy array, its header checked before anything is allocated."""
    try:
        with open(path, "rb") as f:
            check_npy_header(f, Path(path).stat().st_size, f"{option} {path}")
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if str(e).startswith(option):
            raise
        raise ValueError(f"{option} {path}: not a numeric .npy array without pickles ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{option} {path}: cannot read ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise ValueError(f"{option} {path}: not a real numeric array (dtype {getattr(arr, 'dtype', '?')})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{option} {path}: contains NaN or infinite values")
    return arr


def _sizes_agree(path: Path, T: int, B: int, seq_len: int | None, batch: int | None) -> None:
    """--seq-len and --batch may repeat the file's T and B, never contradict them."""
    for option, given, have in (("--seq-len", seq_len, T), ("--batch", batch, B)):
        if given is not None and given != have:
            what = "steps" if option == "--seq-len" else "sequences"
            raise OptionError(f"`{option}` {given} contradicts --inputs {path}, which holds {have} {what}")


def load_inputs(
    path: Path, seq_len: int | None, batch: int | None, D: int | None, *, batch_first: bool = False
) -> np.ndarray:
    """Inputs from a .npy file: (T, B, D), (B, T, D) with batch_first, or (T, D) for one sequence.
    T, B and D come from the file, every sequence is used; --seq-len and --batch may only repeat
    them. D None: any input size (a fresh network takes the file's)."""
    arr = _read_array(path, "--inputs")
    if arr.ndim == 2:
        arr = arr[:, None, :]  # one sequence
    elif arr.ndim == 3 and batch_first:
        arr = np.swapaxes(arr, 0, 1)  # (B, T, D) -> (T, B, D)
    if arr.ndim != 3:
        layout = "(B, T, D)" if batch_first else "(T, B, D)"
        raise ValueError(f"--inputs {path}: shape {arr.shape}; expected {layout} or (T, D)")
    T, B, D_data = arr.shape
    if D is not None and D_data != D:
        hint = " (is it batch-first? then give --batch-first)" if not batch_first and arr.shape[1] == D else ""
        raise ValueError(f"--inputs {path}: input size D = {D_data}, but the model expects D = {D}{hint}")
    _sizes_agree(path, T, B, seq_len, batch)
    return np.ascontiguousarray(arr, dtype=np.float64)


def targets_loss(path: Path | None, requested: str | None) -> str:
    """The loss of --inputs' sequences: from the dtype of --targets (integers: xent on classes;
    floats: mse), or half-square (1/2 ||h_t||^2 of the states, no targets) without a file."""
    if path is None:
        if requested not in (None, "half-square"):
            raise OptionError(
                f"`--loss {requested}` needs the targets of --inputs' sequences: give --targets FILE "
                "(without it the loss is half-square, 1/2 ||h_t||^2 of the states)"
            )
        return "half-square"
    with open(path, "rb") as f:
        try:
            _, dtype = npy_claim(f)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"--targets {path}: not a readable .npy array ({e})") from None
    loss = "xent" if dtype.kind in "iu" else "mse"
    if requested is not None and requested != loss:
        kind = "integer classes" if loss == "xent" else "floats"
        raise OptionError(f"`--loss {requested}` does not fit --targets {path}, which holds {kind} (the loss {loss})")
    return loss


def load_targets(path: Path, loss: str, T: int, B: int, V: int, *, batch_first: bool = False) -> np.ndarray:
    """--targets: (T, B) integer classes < V (xent) or (T, B, V) floats (mse); (B, T[, V]) with
    batch_first; (T,) or (T, V) for one sequence. Checked against the inputs and the output layer."""
    arr = _read_array(path, "--targets")
    want = 2 if loss == "xent" else 3
    if arr.ndim == want - 1 and B == 1:
        arr = arr[:, None]  # one sequence
    elif arr.ndim == want and batch_first:
        arr = np.swapaxes(arr, 0, 1)
    shape = (
        ("(T, B)" if loss == "xent" else "(T, B, V)")
        if not batch_first
        else ("(B, T)" if loss == "xent" else "(B, T, V)")
    )
    if arr.ndim != want or arr.shape[:2] != (T, B):
        raise ValueError(f"--targets {path}: shape {arr.shape}; expected {shape} with T = {T}, B = {B} as --inputs")
    if loss == "xent":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= V:
            raise ValueError(
                f"--targets {path}: classes must be in 0..{V - 1} (the output layer has V = {V}); got {lo}..{hi}"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.shape[2] != V:
        raise ValueError(f"--targets {path}: V = {arr.shape[2]} values per step, but the output layer has V = {V}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def load_source(
    model_opts: ModelOptions, data_opts: DataOptions, rng: np.random.Generator, *, loss: str | None = None
) -> Source:
    """The network and a batch for it, from the shared options (see the module docstring)."""
    mf = (
        None
        if model_opts.model is None
        else open_model(model_opts.model, model_opts.key, head=model_opts.head, activation=model_opts.activation)
    )
    saved = saved_options(mf)
    task = _task(data_opts, saved)
    x_file = None
    if data_opts.inputs is not None:
        lossname = targets_loss(data_opts.targets, loss)
        x_file = load_inputs(
            data_opts.inputs, data_opts.seq_len, data_opts.batch, None, batch_first=data_opts.batch_first
        )
    else:
        lossname = _loss(loss, task, saved)
    headless = mf is not None and mf.network is not None and mf.network.head is None
    if headless and get_loss(lossname).uses_output:
        if loss is not None or data_opts.targets is not None or task is not None:
            raise ValueError(
                f"--model {mf.path}: no output layer (no nn.Linear head beside the recurrent module; --head PREFIX "
                f"names one), so the {lossname} loss cannot be computed; without targets the loss is the states' own"
            )
        lossname = "half-square"  # random inputs: the signal of 1/2 ||h_t||^2, which needs no head
    D = task.input_size if task is not None else model_opts.input if x_file is None else x_file.shape[2]
    V = 0 if not get_loss(lossname).uses_output else (task.output_size if task is not None else model_opts.output)
    cell, origin, desc = _network(model_opts, mf, saved, rng, D, V)
    _check_trajectory_memory(cell, task, data_opts)
    if task is not None:
        if (cell.input_size, cell.output_size) != (task.input_size, task.output_size):
            raise ValueError(
                f"the {task.name} task needs input/output sizes {task.input_size}/{task.output_size}; "
                f"the model has {cell.input_size}/{cell.output_size}"
            )
        batch = heldout_set(task, data_opts.batch or DEFAULT_BATCH)
        data = f"held-out set of the {task.name} task"
        if batch.size < (data_opts.batch or 0):
            raise ValueError(f"--batch {data_opts.batch}: the held-out text has only {batch.size} windows")
    else:
        if x_file is not None:
            x = x_file
            if x.shape[2] != cell.input_size:
                raise ValueError(
                    f"--inputs {data_opts.inputs}: input size D = {x.shape[2]}, but the model expects "
                    f"D = {cell.input_size}"
                    + ("" if data_opts.batch_first else " (batch-first data? give --batch-first)")
                )
            T, B, _ = x.shape
            data = f"inputs from {data_opts.inputs} (T = {T}, B = {B})"
            if data_opts.targets is None:
                targets = None
                data += ", no targets: the loss is 1/2 ||h_t||^2 of the states"
            else:
                targets = load_targets(
                    data_opts.targets, lossname, T, B, cell.output_size, batch_first=data_opts.batch_first
                )
                data += f", targets from {data_opts.targets}"
        else:
            T = data_opts.seq_len or DEFAULT_SEQ_LEN
            B = data_opts.batch or DEFAULT_BATCH
            x = data_opts.input_scale * rng.normal(size=(T, B, cell.input_size))  # (T, B, D)
            data = f"random N(0, {data_opts.input_scale:g}^2) inputs" if data_opts.input_scale else "zero inputs"
            targets = _random_targets(rng, lossname, T, B, cell.output_size)
            if targets is not None:
                data += ", random targets"
        batch = Batch(x=x, targets=targets, mask=np.ones((T, B)))
    h0, start = initial_state(data_opts.h0, rng, batch.size, cell.state_size)
    return Source(
        cell=cell,
        origin=origin,
        model=desc,
        task=task,
        batch=batch,
        data=data,
        loss=lossname,
        saved=saved,
        h0=h0,
        start=start,
        user_span=None if data_opts.span is None else min(data_opts.span, batch.x.shape[0] - 1),
    )


# (T, B, .) arrays a trace and a trajectory hold at once: the states twice (the trace's run and
# the Lyapunov run), the loss gradient, the adjoint chunk's share, the outputs, the inputs
TRAJECTORY_ARRAYS = 5


def trajectory_bytes(T: int, B: int, cell: Cell) -> float:
    """What a trace (and a Lyapunov run) of T steps of B sequences holds, in bytes (float64)."""
    S, D, V = cell.state_size, cell.input_size, max(cell.output_size, 1)
    return 8.0 * T * B * (TRAJECTORY_ARRAYS * S + D + 2 * V)


def _check_trajectory_memory(cell: Cell, task: Task | None, opts: DataOptions) -> None:
    """Refuse sizes whose trajectory would not fit, before any of it is allocated."""
    if opts.inputs is not None:
        return  # the file's own header is checked where it is read, and T, B come from it
    H = cell.hidden_size
    if task is not None:
        T, B = task.seq_len, max(opts.batch or DEFAULT_BATCH, 256)  # the held-out set is drawn whole
        what = f"--batch {opts.batch or DEFAULT_BATCH} with the {task.name} task's T = {T} and H = {H}"
    else:
        T, B = opts.seq_len or DEFAULT_SEQ_LEN, opts.batch or DEFAULT_BATCH
        what = f"--seq-len {T} with --batch {B} and H = {H}"
    check_fits(trajectory_bytes(T, B, cell), what)


def initial_state(h0: str, rng: np.random.Generator, B: int, S: int) -> tuple[np.ndarray | None, str]:
    """--h0: zeros (None), N(0, 1) per unit and sequence, or a .npy file holding (S,) (every
    sequence starts there) or (B, S). Returns the (B, S) state and one line naming it."""
    if h0 == "zeros":
        return None, "h0 = 0"
    if h0 == "random":
        return rng.standard_normal((B, S)), "h0 ~ N(0, 1) per unit"
    try:
        with open(h0, "rb") as f:
            check_npy_header(f, Path(h0).stat().st_size, f"--h0 {h0}")
        arr = np.load(h0, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        if str(e).startswith("--h0"):
            raise
        raise ValueError(f"--h0 {h0}: not a readable numeric .npy array without pickles ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise ValueError(f"--h0 {h0}: not a real numeric array (dtype {getattr(arr, 'dtype', '?')})")
    if arr.shape == (S,):
        arr = np.broadcast_to(arr, (B, S))
    if arr.shape != (B, S):
        raise ValueError(f"--h0 {h0}: shape {arr.shape}; expected ({S},) or (B, S) = ({B}, {S})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"--h0 {h0}: contains NaN or infinite values")
    return arr.astype(np.float64), f"h0 from {h0}"


def default_warmup(warmup: int | None, seq_len: int) -> int:
    """The Lyapunov warm-up: as given, else 50 steps or a quarter of the sequence, whichever is less."""
    return min(50, seq_len // 4) if warmup is None else warmup

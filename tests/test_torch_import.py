"""io/torch_state.py, io/models.py and `bptt export`: a user's PyTorch model read into bptt, and
bptt's models written back for PyTorch.

The oracles are PyTorch's own modules: the parsed arrays are the module's tensors bit for bit,
the exported files load into nn.RNN / nn.GRU / nn.LSTM + nn.Linear with strict=True, and the
module's outputs equal a numpy forward of the imported parameters (core/netcell.py, and
core/cells.RNNCell for bptt's vanilla RNN) to 1e-12 in float64."""

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from bptt_cli.analyses.export import export_network
from bptt_cli.cli.app import app
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.net import init_net_params
from bptt_cli.core.netcell import NetCell
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.io.checkpoint import save_checkpoint
from bptt_cli.io.jsondoc import loads_strict
from bptt_cli.io.models import open_model
from bptt_cli.io.torch_state import META_KEY, load_network, vanilla_as_net

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "json-schema.json").read_text()))
CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
D, H, V = 3, 5, 4


class UserModel(nn.Module):
    """What a user writes: a recurrent module and a Linear head, under names of their choosing."""

    def __init__(self, kind, num_layers, bias, nonlinearity="tanh", rnn="rnn", head="head"):
        super().__init__()
        kw = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        self.rnn_name, self.head_name = rnn, head
        setattr(self, rnn, CELLS[kind](D, H, num_layers=num_layers, bias=bias, **kw))
        setattr(self, head, nn.Linear(H, V))

    def forward(self, x):
        return getattr(self, self.head_name)(getattr(self, self.rnn_name)(x)[0])


def user_model(kind, num_layers=1, bias=True, nonlinearity="tanh", seed=0, **names):
    torch.manual_seed(seed)
    return UserModel(kind, num_layers, bias, nonlinearity, **names).double()


def np_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def numpy_outputs(net, x):
    cell = NetCell(net.params, net.activation or "tanh")
    return cell.outputs(cell.run(x))


def one_line(message, path):
    assert message.startswith(f"--model {path}"), message
    assert "\n" not in message and "\x1b" not in message and "Traceback" not in message, message
    assert len(message) < 300, message


CASES = [
    ("rnn", "tanh"),
    ("rnn", "relu"),
    ("gru", None),
    ("lstm", None),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize(("kind", "nonlinearity"), CASES)
def test_a_user_module_is_read_exactly_and_runs_as_pytorch_runs_it(kind, nonlinearity, num_layers, bias, tmp_path):
    model = user_model(kind, num_layers, bias, nonlinearity or "tanh", seed=num_layers + 10 * bias)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    net = load_network(path, activation=nonlinearity)
    p = net.params
    assert (p.kind, p.num_layers, p.bias, p.input_size, p.hidden_size, p.output_size) == (
        kind,
        num_layers,
        bias,
        D,
        H,
        V,
    )
    assert (net.module, net.head, net.activation, net.activation_from_file) == ("rnn", "head", nonlinearity, False)
    for k, layer in enumerate(p.layers):
        assert_array_equal(layer.W_ih, getattr(model.rnn, f"weight_ih_l{k}").detach().numpy())
        assert_array_equal(layer.W_hh, getattr(model.rnn, f"weight_hh_l{k}").detach().numpy())
        for name, arr in (("bias_ih", layer.b_ih), ("bias_hh", layer.b_hh)):
            expected = getattr(model.rnn, f"{name}_l{k}").detach().numpy() if bias else np.zeros(arr.shape)
            assert_array_equal(arr, expected)
    assert_array_equal(p.W_y, model.head.weight.detach().numpy())
    assert_array_equal(p.c, model.head.bias.detach().numpy())
    assert p.dtype == np.float64

    x = np.random.default_rng(7).normal(size=(12, 2, D))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = numpy_outputs(net, x)
    assert np.max(np.abs(got - expected)) <= 1e-12 * max(1.0, np.max(np.abs(expected)))


def test_float32_modules_stay_float32_and_exact(tmp_path):
    torch.manual_seed(3)
    model = UserModel("lstm", 2, True)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    p = load_network(tmp_path / "m.pt").params
    assert p.dtype == np.float32
    assert_array_equal(p.layers[1].W_hh, model.rnn.weight_hh_l1.detach().numpy())


def test_the_module_is_found_by_suffix_and_chosen_with_key(tmp_path):
    model = user_model("gru", 2, rnn="lstm", head="fc")
    state = {f"encoder.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "nested.pt")
    net = load_network(tmp_path / "nested.pt")
    assert (net.module, net.head, net.kind, net.num_layers) == ("encoder.lstm", "encoder.fc", "gru", 2)

    bare = nn.LSTM(D, H)
    torch.save({**bare.state_dict(), "out.weight": torch.ones(V, H), "out.bias": torch.zeros(V)}, tmp_path / "bare.pt")
    net = load_network(tmp_path / "bare.pt")
    assert (net.module, net.head, net.kind) == ("", "out", "lstm")
    assert_array_equal(net.params.layers[0].W_ih, bare.weight_ih_l0.detach().numpy())

    two = {**{f"enc.{k}": v for k, v in nn.GRU(D, H).state_dict().items()}}
    two.update({f"dec.{k}": v for k, v in nn.LSTM(H, H).state_dict().items()})
    two.update(user_model("rnn").head.state_dict())  # weight, bias: no prefix, not a head candidate
    two.update({f"fc.{k}": v for k, v in nn.Linear(H, V).state_dict().items()})
    torch.save(two, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"holds 2 recurrent modules \(dec, enc\); choose one with --key") as e:
        load_network(tmp_path / "two.pt")
    one_line(str(e.value), tmp_path / "two.pt")
    assert load_network(tmp_path / "two.pt", key="dec").kind == "lstm"
    assert load_network(tmp_path / "two.pt", key="enc.").kind == "gru"  # the trailing dot is allowed
    with pytest.raises(ValueError, match=r"--key nope: no recurrent module 'nope' \(modules: dec, enc\)"):
        load_network(tmp_path / "two.pt", key="nope")


def test_the_head_is_found_by_shape_or_chosen(tmp_path):
    model = user_model("rnn")
    state = dict(model.state_dict())
    state["embed.weight"] = torch.ones(7, H, dtype=torch.float64)  # (V, H) but no bias: an nn.Embedding
    state["other.weight"] = torch.ones(2, 9, dtype=torch.float64)  # not on H
    state["other.bias"] = torch.ones(2, dtype=torch.float64)
    torch.save(state, tmp_path / "m.pt")
    assert load_network(tmp_path / "m.pt", activation="tanh").head == "head"

    state["aux.weight"] = torch.ones(3, H, dtype=torch.float64)
    state["aux.bias"] = torch.ones(3, dtype=torch.float64)
    torch.save(state, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"2 candidates for the output layer \(aux, head") as e:
        load_network(tmp_path / "two.pt", activation="tanh")
    one_line(str(e.value), tmp_path / "two.pt")
    assert "--head PREFIX" in str(e.value)
    net = load_network(tmp_path / "two.pt", head="aux", activation="tanh")
    assert net.params.output_size == 3 and net.head == "aux"

    net = load_network(tmp_path / "two.pt", head="embed", activation="tanh")  # a Linear without bias: c = 0
    assert net.params.output_size == 7 and not net.params.c.any()


def test_no_head_is_an_error_unless_the_caller_brings_its_own(tmp_path):
    rnn = nn.RNN(D, H)
    torch.save(rnn.state_dict(), tmp_path / "rnn.pt")
    with pytest.raises(ValueError, match="no output layer: the analysis needs one") as e:
        load_network(tmp_path / "rnn.pt", activation="tanh")
    one_line(str(e.value), tmp_path / "rnn.pt")
    net = load_network(tmp_path / "rnn.pt", activation="tanh", need_head=False)
    assert net.head is None and net.params.W_y.shape == (0, H) and net.params.c.shape == (0,)
    # what --model did with such a file before networks: its W_hh as a matrix, still there
    mf = open_model(tmp_path / "rnn.pt")
    assert mf.kind == "network" and mf.network.activation is None and mf.key == "weight_hh_l0"
    assert_array_equal(mf.matrix, rnn.weight_hh_l0.detach().numpy().astype(np.float64))


def refusals(tmp_path):
    """(file, load_network keywords, the key or option the message names, a fragment)."""
    cases = []

    def add(name, state, kw, named, fragment):
        path = tmp_path / name
        torch.save(state, path)
        cases.append((path, kw, named, fragment))

    head = {f"head.{k}": v for k, v in nn.Linear(H, V).state_dict().items()}

    def wrapped(module):
        return {**{f"rnn.{k}": v for k, v in module.state_dict().items()}, **head}

    add("bidir.pt", wrapped(nn.GRU(D, H, bidirectional=True)), {}, "rnn.weight_hh_l0_reverse", "bidirectional")
    add("proj.pt", wrapped(nn.LSTM(D, H, proj_size=2)), {}, "rnn.weight_hr_l0", "proj_size")
    good = wrapped(nn.LSTM(D, H, num_layers=2))
    add(
        "headshape.pt",
        {**good, "fc.weight": torch.ones(V, H + 1), "fc.bias": torch.ones(V)},
        {"head": "fc"},
        "fc.weight",
        "not an nn.Linear",
    )
    add(
        "headbias.pt",
        {**good, "fc.weight": torch.ones(V, H), "fc.bias": torch.ones(V + 1)},
        {"head": "fc"},
        "fc.bias",
        "must be",
    )
    add("nohead.pt", good, {"head": "fc"}, "fc.weight", "no fc.weight")
    add("layer.pt", {**good, "rnn.weight_ih_l1": torch.ones(4 * H, H + 2)}, {}, "rnn.weight_ih_l1", "needs (20, 5)")
    add("kinds.pt", {**good, "rnn.weight_hh_l1": torch.ones(3 * H, H)}, {}, "rnn.weight_hh_l1", "needs (20, 5)")
    add("shape.pt", {**good, "rnn.weight_hh_l0": torch.ones(2 * H, H)}, {}, "rnn.weight_hh_l0", "2 H x H")
    missing = dict(good)
    del missing["rnn.weight_ih_l1"]
    add("missing.pt", missing, {}, "rnn.weight_ih_l1", "is missing")
    nobias = dict(good)
    del nobias["rnn.bias_hh_l1"]
    add("nobias.pt", nobias, {}, "rnn.bias_hh_l1", "is missing")
    gap = {k.replace("_l1", "_l2"): v for k, v in good.items()}
    add("gap.pt", gap, {}, "rnn.weight_hh_l1", "numbered from 0")
    add("nan.pt", {**good, "rnn.bias_ih_l0": torch.full((4 * H,), float("nan"))}, {}, "rnn.bias_ih_l0", "NaN")
    add(
        "int.pt", {**good, "rnn.weight_hh_l1": torch.ones(4 * H, H, dtype=torch.int64)}, {}, "rnn.weight_hh_l1", "not a"
    )
    add(
        "cplx.pt", {**good, "head.weight": torch.ones(V, H, dtype=torch.complex64)}, {"head": "head"}, "head", "complex"
    )
    add("act.pt", wrapped(nn.RNN(D, H)), {}, "--activation", "nonlinearity is not in its state dict")
    add("lstmact.pt", good, {"activation": "relu"}, "--activation", "applies to an nn.RNN")
    add("none.pt", {**head}, {}, "weight_hh_l0", "no recurrent module")
    add("tensor.pt", torch.eye(3), {}, "state dict", "a single tensor")
    meta = export_network(init_net_params(np.random.default_rng(0), kind="gru", input_size=D, hidden_size=H,
                                          output_size=V), None, tmp_path / "exported.pt")  # fmt: skip
    record = torch.load(meta.path, weights_only=True)
    text = bytes(record[META_KEY].numpy()).decode().replace('"hidden_size": 5', '"hidden_size": 6')
    record[META_KEY] = torch.tensor(list(text.encode()), dtype=torch.uint8)
    add("meta.pt", record, {}, META_KEY, "hidden_size = 6")
    return cases


def test_every_refusal_is_one_line_naming_the_key(tmp_path):
    for path, kw, named, fragment in refusals(tmp_path):
        with pytest.raises(ValueError) as e:
            load_network(path, **kw)
        message = str(e.value)
        one_line(message, path)
        assert named in message and fragment in message, (path.name, message)


def test_the_refusals_reach_open_model_too(tmp_path):
    cases = {p.name: (p, kw) for p, kw, _, _ in refusals(tmp_path)}
    for name in ("bidir.pt", "proj.pt", "layer.pt", "gap.pt"):
        path, _ = cases[name]
        with pytest.raises(ValueError) as e:
            open_model(path)
        one_line(str(e.value), path)


def test_torch_missing_says_how_to_install_the_cpu_build(tmp_path, monkeypatch):
    torch.save(user_model("gru").state_dict(), tmp_path / "m.pt")
    p = init_params(np.random.default_rng(0), input_size=D, hidden_size=H, output_size=V)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    for call in (lambda: load_network(tmp_path / "m.pt"), lambda: open_model(tmp_path / "m.pt")):
        with pytest.raises(ValueError) as e:
            call()
        one_line(str(e.value), tmp_path / "m.pt")
        assert "needs torch, which is not installed" in str(e.value)
        assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in str(e.value)
    with pytest.raises(ValueError, match=r"--to .*m2.pt: writing a PyTorch file needs torch.*--to NAME.npz") as e:
        export_network(p, "tanh", tmp_path / "m2.pt")
    assert not (tmp_path / "m2.pt").exists()
    export_network(p, "tanh", tmp_path / "m2.npz")  # numpy alone
    assert load_network(tmp_path / "m2.npz").vanilla() is not None


def test_an_npz_with_the_same_keys_is_the_same_network(tmp_path):
    model = user_model("lstm", 3, bias=False, seed=5, rnn="encoder", head="decoder")
    torch.save(model.state_dict(), tmp_path / "m.pt")
    np.savez(tmp_path / "m.npz", **np_state(model))
    a, b = load_network(tmp_path / "m.pt"), load_network(tmp_path / "m.npz")
    assert (b.module, b.head) == ("encoder", "decoder")
    for x, y in zip(a.params.flat(), b.params.flat(), strict=True):
        assert x == y
    mf = open_model(tmp_path / "m.npz")
    assert mf.kind == "network" and mf.matrix is None and mf.network.num_layers == 3


def test_open_model_keeps_matrix_files_and_tells_key_from_prefix(tmp_path):
    model = user_model("rnn", 1)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    W = model.rnn.weight_hh_l0.detach().numpy()
    mf = open_model(tmp_path / "m.pt", activation="relu")  # a 1-layer nn.RNN: a network and its W_hh
    assert mf.kind == "network" and mf.network.activation == "relu" and mf.key == "rnn.weight_hh_l0"
    assert_array_equal(mf.matrix, W)
    assert mf.where == f"{tmp_path / 'm.pt'} (module rnn)"
    by_name = open_model(tmp_path / "m.pt", key="rnn.weight_hh_l0")  # an array's name: that matrix
    assert by_name.kind == "matrix" and by_name.network is None
    assert_array_equal(by_name.matrix, W)
    assert open_model(tmp_path / "m.pt", key="rnn").kind == "network"  # a module's prefix
    with pytest.raises(ValueError, match="no array or recurrent module named 'enc' .modules: rnn; arrays: rnn") as e:
        open_model(tmp_path / "m.pt", key="enc")
    one_line(str(e.value), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="--model .* an nn.RNN's nonlinearity is not in its state dict"):
        open_model(tmp_path / "m.pt", need_activation=True)

    torch.save({"weight_hh_l0": torch.eye(3)}, tmp_path / "lone.pt")  # no weight_ih_l0: a matrix, as before
    lone = open_model(tmp_path / "lone.pt")
    assert lone.kind == "matrix" and lone.key == "weight_hh_l0"
    assert_array_equal(lone.matrix, np.eye(3))
    with pytest.raises(ValueError, match="--head applies to a state dict with a recurrent module"):
        open_model(tmp_path / "lone.pt", head="fc")

    deep = user_model("lstm", 2)
    torch.save(deep.state_dict(), tmp_path / "deep.pt")
    mf = open_model(tmp_path / "deep.pt")
    assert mf.kind == "network" and mf.matrix is None and mf.key is None

    p = init_params(np.random.default_rng(0), input_size=D, hidden_size=H, output_size=V)
    save_checkpoint(tmp_path / "ck.npz", p, {"activation": "tanh"})
    assert open_model(tmp_path / "ck.npz").kind == "checkpoint"
    with pytest.raises(ValueError, match="--key applies to matrix files and state dicts"):
        open_model(tmp_path / "ck.npz", key="rnn")


def load_strict(path, params, activation):
    """The model as the user rebuilds it; load_state_dict(strict=True) raises on any mismatch."""
    kw = {"nonlinearity": activation} if params.kind == "rnn" else {}
    rnn = CELLS[params.kind](
        params.input_size, params.hidden_size, num_layers=params.num_layers, bias=params.bias, **kw
    )
    model = nn.ModuleDict({"rnn": rnn, "head": nn.Linear(params.hidden_size, params.output_size)}).double()
    if path.suffix == ".npz":
        state = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    else:
        state = torch.load(path, weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if k != META_KEY}, strict=True)
    return model


def torch_outputs(model, x):
    with torch.no_grad():
        return model["head"](model["rnn"](torch.from_numpy(x))[0]).numpy()


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bptt_vanilla_rnn_round_trip(activation, suffix, tmp_path):
    rng = np.random.default_rng(11)
    fresh = init_params(rng, input_size=D, hidden_size=H, output_size=V)
    params = Params(**{**fresh.as_dict(), "b": rng.normal(size=H), "c": rng.normal(size=V)})
    result = export_network(params, activation, tmp_path / f"m{suffix}")
    assert result.keys[-1] == META_KEY and "rnn.bias_hh_l0" in result.keys
    model = load_strict(result.path, result.params, activation)
    assert_array_equal(model["rnn"].bias_ih_l0.detach().numpy(), params.b)
    assert not model["rnn"].bias_hh_l0.detach().numpy().any()

    net = load_network(result.path)  # the nonlinearity from the file's own record
    assert net.activation == activation and net.activation_from_file
    back = net.vanilla()
    for name, arr in params.as_dict().items():
        assert_array_equal(getattr(back, name), arr)
        assert getattr(back, name).dtype == arr.dtype

    x = rng.normal(size=(15, 3, D))
    cell = RNNCell(back, activation)
    expected = torch_outputs(model, x)
    assert np.max(np.abs(cell.outputs(cell.run(x)) - expected)) <= 1e-12 * max(1.0, np.max(np.abs(expected)))

    namespace = {"torch": torch, "nn": nn, "np": np}  # the two lines the command prints, as printed
    for line in result.pytorch:
        exec(line, namespace)  # noqa: S102 - our own two lines
    assert_array_equal(namespace["model"]["head"].weight.detach().numpy(), params.W_y)


@pytest.mark.parametrize(
    ("kind", "num_layers", "bias"), [("rnn", 2, False), ("gru", 1, True), ("gru", 3, False), ("lstm", 2, True)]
)
def test_netparams_round_trip(kind, num_layers, bias, tmp_path):
    rng = np.random.default_rng(num_layers)
    params = init_net_params(
        rng, kind=kind, input_size=D, hidden_size=H, output_size=V, num_layers=num_layers, bias=bias
    )
    activation = "relu" if kind == "rnn" else None
    result = export_network(params, activation, tmp_path / "net.pt")
    model = load_strict(result.path, params, activation)
    net = load_network(result.path)
    assert (net.kind, net.num_layers, net.bias, net.activation) == (kind, num_layers, bias, activation)
    assert net.activation_from_file == (kind == "rnn")
    for (name, a), (name_b, b) in zip(params.as_dict().items(), net.params.as_dict().items(), strict=True):
        assert name == name_b
        assert_array_equal(a, b)
    x = rng.normal(size=(10, 2, D))
    expected = torch_outputs(model, x)
    assert np.max(np.abs(numpy_outputs(net, x) - expected)) <= 1e-12 * max(1.0, np.max(np.abs(expected)))


def test_export_refuses_what_pytorch_cannot_hold_and_never_overwrites(tmp_path):
    params = init_params(np.random.default_rng(0), input_size=D, hidden_size=H, output_size=V)
    with pytest.raises(ValueError, match="tanh or relu"):
        export_network(params, "identity", tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    (tmp_path / "m.pt").write_text("mine")
    with pytest.raises(ValueError, match=r"--to .*m.pt: exists; bptt does not overwrite"):
        export_network(params, "tanh", tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_text() == "mine"
    with pytest.raises(ValueError, match="does not exist"):
        export_network(params, "tanh", tmp_path / "no" / "m.pt")
    result = export_network(params, "tanh", tmp_path / "f32.pt", dtype="float32")
    assert load_network(result.path).params.dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f32.pt", "m.pt"]
    assert vanilla_as_net(params).num_layers == 1


runner = CliRunner()


def test_the_command(tmp_path):
    rng = np.random.default_rng(2)
    params = Params(**{**init_params(rng, input_size=D, hidden_size=H, output_size=V).as_dict(), "b": np.ones(H)})
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "model.npz", params, {"kind": "train", "options": {"activation": "relu"}})
    r = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "m.pt")], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    assert "model.load_state_dict(" in r.stdout and 'nonlinearity="relu"' in r.stdout
    back = load_network(tmp_path / "m.pt").vanilla()
    assert_array_equal(back.W_h, params.W_h) and load_network(tmp_path / "m.pt").activation == "relu"

    r = runner.invoke(app, ["export", str(run / "model.npz"), "--to", str(tmp_path / "m.pt"), "--json"])
    assert r.exit_code == 1
    doc = loads_strict(r.stdout)
    VALIDATOR.validate(doc)
    assert "exists; bptt does not overwrite" in doc["error"]["message"] and "\n" not in r.stderr.strip()

    args = ["export", str(run), "--to", str(tmp_path / "m.npz"), "--json", "--activation", "tanh", "--dtype", "float32"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    doc = loads_strict(r.stdout)
    VALIDATOR.validate(doc)
    assert doc["command"] == "export" and "verdict" not in doc
    res = doc["results"]
    assert res["format"] == "npz" and res["network"]["nonlinearity"] == "tanh"
    assert res["network"]["nonlinearity_from"] == "option" and res["network"]["dtype"] == "float32"
    assert res["keys"][-1] == META_KEY and len(res["pytorch"]) == 2

    r = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "q.pt"), "-q"])
    assert r.exit_code == 0 and r.stdout == "" and (tmp_path / "q.pt").is_file()

    save_checkpoint(tmp_path / "lin.npz", params, {"activation": "identity"})
    r = runner.invoke(app, ["export", str(tmp_path / "lin.npz"), "--to", str(tmp_path / "lin.pt")])
    assert r.exit_code == 1 and "tanh or relu" in r.stderr and not (tmp_path / "lin.pt").exists()
    assert len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--to", str(tmp_path / "z.pt")])
    assert r.exit_code == 1 and "RUN_OR_CHECKPOINT" in r.stderr and "not a bptt checkpoint" in r.stderr

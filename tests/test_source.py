"""io/models.py and analyses/source.py: every way to hand bptt a model, and every way to get it wrong."""

import sys
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.analyses.source import DataOptions, ModelOptions, load_source
from bptt_cli.analyses.trace import TraceConfig
from bptt_cli.core.eigen import dense_spectral_radius as spectral_radius
from bptt_cli.core.rnn import init_params
from bptt_cli.core.validate import OptionError
from bptt_cli.io.checkpoint import save_checkpoint
from bptt_cli.io.models import load_matrix, open_model

torch = pytest.importorskip("torch")


@pytest.fixture
def W():
    return np.random.default_rng(0).normal(size=(6, 6))


def test_npy_npz_and_checkpoint(tmp_path, W):
    np.save(tmp_path / "w.npy", W.astype(np.float32))
    got = load_matrix(tmp_path / "w.npy")
    assert got.dtype == np.float64
    assert_array_equal(got, W.astype(np.float32).astype(np.float64))

    np.savez(tmp_path / "one.npz", anything=W)
    assert_array_equal(load_matrix(tmp_path / "one.npz"), W)
    np.savez(tmp_path / "two.npz", W_h=W, W_x=np.ones((6, 2)))
    assert_array_equal(load_matrix(tmp_path / "two.npz", key="W_h"), W)

    p = init_params(np.random.default_rng(1), input_size=2, hidden_size=4, output_size=3)
    path = save_checkpoint(tmp_path / "model.npz", p, {"activation": "tanh"})
    assert_array_equal(load_matrix(path), p.W_h)  # a checkpoint defaults to its W_h

    np.save(tmp_path / "ints.npy", np.eye(3, dtype=np.int32))
    assert_array_equal(load_matrix(tmp_path / "ints.npy"), np.eye(3))


def test_torch_state_dict_default_key_and_custom_key(tmp_path):
    torch.manual_seed(0)
    rnn = torch.nn.RNN(input_size=3, hidden_size=5)
    torch.save(rnn.state_dict(), tmp_path / "rnn.pt")
    assert_allclose(load_matrix(tmp_path / "rnn.pt"), rnn.weight_hh_l0.detach().numpy(), rtol=0)
    torch.save({"enc.W": torch.eye(4, dtype=torch.float64)}, tmp_path / "model.pth")
    assert_array_equal(load_matrix(tmp_path / "model.pth", key="enc.W"), np.eye(4))
    torch.save(torch.eye(3), tmp_path / "bare.pt")
    assert_array_equal(load_matrix(tmp_path / "bare.pt"), np.eye(3))


class Evil:
    """Unpickling this would run code; weights_only=True must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def write_bomb(path):
    """A 192-byte .npy whose header claims a (100000, 100000) float64 array (74.5 GiB)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (100000, 100000)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)


def zip_bomb(path):
    write_bomb(path.with_suffix(".inner"))
    with zipfile.ZipFile(path, "w") as z:
        z.write(path.with_suffix(".inner"), "W.npy")


def bad_files(tmp_path):
    """(path, key, expected message fragment) for every bad input of issue 3."""
    cases = []

    def add(name, key, match, writer):
        path = tmp_path / name
        writer(path)
        cases.append((path, key, match))

    add("missing.npy", None, "no such file", lambda p: None)
    add("rect.npy", None, r"not a square matrix \(shape \(3, 4\)\)", lambda p: np.save(p, np.ones((3, 4))))
    add("vector.npy", None, "not a square matrix", lambda p: np.save(p, np.ones(4)))
    add("empty.npy", None, "empty matrix", lambda p: np.save(p, np.ones((0, 0))))
    add("text.npy", None, "not a numeric matrix", lambda p: np.save(p, np.array([["a", "b"], ["c", "d"]])))
    add("bool.npy", None, "not a numeric matrix", lambda p: np.save(p, np.eye(2, dtype=bool)))
    add("complex.npy", None, "complex entries", lambda p: np.save(p, np.eye(2) * (1 + 1j)))
    add("nan.npy", None, r"NaN or infinite values \(1 of 4", lambda p: np.save(p, np.array([[1, np.nan], [0, 1]])))
    add("inf.npy", None, "NaN or infinite", lambda p: np.save(p, np.array([[1, np.inf], [0, 1]])))
    add(
        "object.npy",
        None,
        "pickled",
        lambda p: np.save(p, np.array([[{}, 1], [2, 3]], dtype=object), allow_pickle=True),
    )
    add("garbage.npy", None, "not a .npy, .npz or PyTorch file", lambda p: p.write_bytes(b"\x00\x01 not numpy"))
    add("two.npz", None, "holds 2 arrays", lambda p: np.savez(p, a=np.eye(2), b=np.eye(2)))
    add("nokey.npz", "W_h", "no array named 'W_h'", lambda p: np.savez(p, a=np.eye(2)))
    add("obj.npz", None, "pickled", lambda p: np.savez(p, a=np.array([None, 1], dtype=object)))
    add("notzip.npz", None, "not a .npy, .npz or PyTorch file", lambda p: p.write_bytes(b"plain text"))
    add("nokey.pt", None, "no tensor named 'weight_hh_l0'", lambda p: torch.save({"w": torch.eye(2)}, p))
    add("rect.pt", None, "not a square matrix", lambda p: torch.save({"weight_hh_l0": torch.ones(8, 2)}, p))
    add("cplx.pt", None, "complex", lambda p: torch.save({"weight_hh_l0": torch.eye(2, dtype=torch.complex64)}, p))
    add("evil.pt", None, "refuses to unpickle", lambda p: torch.save({"weight_hh_l0": Evil()}, p))
    add("list.pt", None, "not a state dict", lambda p: torch.save([1, 2], p))
    add("w.txt", None, "not a .npy, .npz or PyTorch file", lambda p: p.write_text("1 0\n0 1\n"))
    add("bomb.npy", None, r"truncated or corrupt: its header claims shape \(100000, 100000\)", write_bomb)
    add("bomb.npz", None, r"truncated or corrupt: its header claims shape \(100000, 100000\)", zip_bomb)
    add("whole.pt", None, "save model.state_dict", lambda p: torch.save(torch.nn.Linear(2, 2), p))
    add("key.npy", "W", "--key applies", lambda p: np.save(p, np.eye(2)))
    return cases


def test_every_bad_file_is_one_clear_value_error(tmp_path, capsys):
    for path, key, match in bad_files(tmp_path):
        with pytest.raises(ValueError, match=match) as e:
            load_matrix(path, key)
        message = str(e.value)
        assert message.startswith(f"--model {path}"), message  # the option and the file the user typed
        assert "\n" not in message and "\x1b" not in message and len(message) < 300, message
    assert "pwned" not in capsys.readouterr().out  # the pickled payload never ran


def test_torch_missing_is_a_clear_message(tmp_path, monkeypatch):
    torch.save({"weight_hh_l0": torch.eye(2)}, tmp_path / "rnn.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ValueError, match="needs torch, which is not installed"):
        load_matrix(tmp_path / "rnn.pt")


def source(**kw):
    model = {k: v for k, v in kw.items() if k in ModelOptions.__dataclass_fields__}
    data = {k: v for k, v in kw.items() if k in DataOptions.__dataclass_fields__}
    return load_source(ModelOptions(**model), DataOptions(**data), np.random.default_rng(0))


def test_model_sources(tmp_path, W):
    fresh = source(hidden=7, init="orthogonal", spectral_radius=0.9, input=3)
    assert fresh.origin == "init" and fresh.cell.params.W_h.shape == (7, 7) and fresh.cell.input_size == 3
    assert_allclose(spectral_radius(fresh.cell.params.W_h), 0.9, rtol=1e-12)
    assert fresh.data.startswith("random") and fresh.batch.x.shape == (200, 32, 3)

    np.save(tmp_path / "w.npy", W)
    from_file = source(model=tmp_path / "w.npy", input=2)
    assert from_file.origin == "matrix" and "random input and output layer" in from_file.model
    assert_array_equal(from_file.cell.params.W_h, W)
    assert from_file.cell.params.W_x.shape == (6, 2)
    rescaled = source(model=tmp_path / "w.npy", spectral_radius=1.2)
    assert_allclose(spectral_radius(rescaled.cell.params.W_h), 1.2, rtol=1e-12)
    assert "rescaled" in rescaled.model

    p = init_params(np.random.default_rng(1), input_size=2, hidden_size=4, output_size=3)
    save_checkpoint(tmp_path / "m.npz", p, {"activation": "relu"})
    for where in (tmp_path / "m.npz", tmp_path):  # the file, or a run folder holding model.npz
        if where == tmp_path:
            (tmp_path / "m.npz").rename(tmp_path / "model.npz")
        from_model = source(model=where)
        assert from_model.origin == "checkpoint" and from_model.saved == {"activation": "relu"}
        assert from_model.cell.activation.name == "relu"  # the checkpoint's own activation
        for name, arr in p.as_dict().items():
            assert_array_equal(getattr(from_model.cell.params, name), arr)


def test_model_options_refuse_nonsense(tmp_path, W):
    np.save(tmp_path / "w.npy", W)
    with pytest.raises(OptionError, match="give --model too"):  # a usage error (exit 2) in a config
        TraceConfig(key="W_h")
    with pytest.raises(ValueError, match="no such file"):
        open_model(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="without model.npz"):
        open_model(tmp_path)
    with pytest.raises(ValueError, match="cannot be combined"):
        DataOptions(task="recall", inputs=tmp_path / "x.npy").check_data_options()

"""checkpoint.py: round trips, atomic writes, and refusal of anything that is not a bptt checkpoint."""

import json
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from bptt_cli.core.rnn import init_params
from bptt_cli.io import checkpoint as ck
from bptt_cli.io.checkpoint import load_checkpoint, save_checkpoint
from bptt_cli.io.models import is_bptt_checkpoint


@pytest.fixture
def params():
    return init_params(np.random.default_rng(0), input_size=3, hidden_size=5, output_size=4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output_size", [4, 0])
def test_round_trip_is_bit_exact(tmp_path, dtype, output_size):
    p = init_params(np.random.default_rng(1), input_size=3, hidden_size=5, output_size=output_size, dtype=dtype)
    config = {"task": "adding", "lr": 0.01, "steps": 300, "truncation": "chunk:20", "nested": {"a": [1, 2.5, None]}}
    extras = {
        "adam_m_W_h": np.random.default_rng(2).normal(size=(5, 5)).astype(dtype),
        "step": np.array(300, dtype=np.int64),
        "flags": np.array([True, False]),
        "counts": np.arange(7, dtype=np.uint64),
        "phase": np.array([1 + 2j]),
    }
    path = save_checkpoint(tmp_path / "model.npz", p, config, extras)
    c = load_checkpoint(path)
    for name, arr in p.as_dict().items():
        got = getattr(c.params, name)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert_array_equal(got, arr)
    assert c.config == config
    assert set(c.extras) == set(extras)
    for name, arr in extras.items():
        assert c.extras[name].dtype == arr.dtype
        assert_array_equal(c.extras[name], arr)


def test_rng_state_round_trips_through_the_config(tmp_path, params):
    rng = np.random.default_rng(123)
    rng.normal(size=17)  # advance it somewhere non-trivial
    state_json = rng.bit_generator.state  # big ints survive JSON
    path = save_checkpoint(tmp_path / "m.npz", params, {"rng": state_json})
    c = load_checkpoint(path)
    expected = rng.random(5)
    again = np.random.default_rng()
    again.bit_generator.state = c.config["rng"]
    assert_array_equal(again.random(5), expected)


def test_no_pickle_inside(tmp_path, params):
    path = save_checkpoint(tmp_path / "m.npz", params, {"a": 1}, {"x": np.ones(3)})
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as f:
                np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0(f)
                assert not header[2].hasobject, name


def test_failed_save_keeps_the_old_checkpoint(tmp_path, params, monkeypatch):
    path = save_checkpoint(tmp_path / "m.npz", params, {"version": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, params, {"version": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary file left
    assert load_checkpoint(path).config == {"version": 1}


@pytest.mark.parametrize(
    ("config", "extras", "match"),
    [
        ({"lr": float("nan")}, None, "JSON"),
        ({"f": object()}, None, "JSON"),
        ([1, 2], None, "dict"),
        ({}, {"obj": np.array([{"a": 1}], dtype=object)}, "numeric"),
        ({}, {"text": np.array(["a"])}, "numeric"),
        ({}, {"a/b": np.ones(2)}, "names"),
    ],
)
def test_save_refuses_what_would_not_round_trip(tmp_path, params, config, extras, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "m.npz", params, config, extras)
    assert not (tmp_path / "m.npz").exists()


def write_raw_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_load_errors_name_the_file_and_problem(tmp_path, params):
    good = save_checkpoint(tmp_path / "good.npz", params, {"a": 1})
    cases = {
        "missing.npz": (None, "no such file"),
        "text.npz": (b"hello, not a zip", "not an .npz archive"),
        "truncated.npz": (good.read_bytes()[:200], "not an .npz archive|corrupt"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ValueError, match=match) as e:
            load_checkpoint(path)
        assert str(path) in str(e.value)

    foreign = write_raw_npz(tmp_path / "foreign.npz", weights=np.ones((2, 2)))
    with pytest.raises(ValueError, match="not a bptt checkpoint"):
        load_checkpoint(foreign)

    arrays = {"bptt_format": np.array(ck.FORMAT), "config": np.array("{}")}
    arrays.update({f"param/{k}": v for k, v in params.as_dict().items()})
    pickled = dict(arrays)
    pickled["param/W_h"] = np.array([object()] * 25, dtype=object).reshape(5, 5)
    with pytest.raises(ValueError, match="pickled"):
        load_checkpoint(write_raw_npz(tmp_path / "pickled.npz", **pickled))

    wrong_shape = dict(arrays)
    wrong_shape["param/b"] = np.zeros(7)
    with pytest.raises(ValueError, match="`b` must have shape"):
        load_checkpoint(write_raw_npz(tmp_path / "shape.npz", **wrong_shape))

    incomplete = {k: v for k, v in arrays.items() if k != "param/W_y"}
    with pytest.raises(ValueError, match="missing param/W_y"):
        load_checkpoint(write_raw_npz(tmp_path / "incomplete.npz", **incomplete))

    bad_json = dict(arrays)
    bad_json["config"] = np.array("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(write_raw_npz(tmp_path / "json.npz", **bad_json))

    other_format = dict(arrays)
    other_format["bptt_format"] = np.array("bptt-checkpoint/99")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        load_checkpoint(write_raw_npz(tmp_path / "v99.npz", **other_format))

    nan = dict(arrays)
    nan["param/W_h"] = np.full((5, 5), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        load_checkpoint(write_raw_npz(tmp_path / "nan.npz", **nan))


def test_config_is_stored_as_json_text(tmp_path, params):
    path = save_checkpoint(tmp_path / "m.npz", params, {"b": 2, "a": [1, 2]})
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["config"])) == {"a": [1, 2], "b": 2}
        assert str(z["bptt_format"]) == ck.FORMAT
    assert is_bptt_checkpoint(path)
    assert not is_bptt_checkpoint(tmp_path / "nothing.npz")

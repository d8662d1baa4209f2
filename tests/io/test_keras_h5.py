"""Tests for graphfix.io.keras_h5: Keras HDF5 files with CuDNN layers -> files Keras 3 and tf_keras run on CPU.

The legacy files are made here by tf_keras (`tests/builders/keras_files.py`: Sequential with
Bidirectional, go_backwards and regularizers; Functional with return_state; nested models;
stateful). The oracle is tf_keras's own conversion: the CPU twin model (LSTM / GRU layers)
`load_weights` the original CuDNN file. The converted file is loaded by Keras 3
(`keras.models.load_model`) and by tf_keras and run on the same random inputs; outputs
agree within 1e-5 (the largest errors seen are printed by the last test, `-s` to see them).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
from builders import keras_files

from graphfix import api, cli
from graphfix.errors import InputError, LayoutError, UnsupportedError

B = 2
TOL = 1e-5
ERRORS: dict[str, float] = {}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every model saved as a legacy CuDNN .h5 (seq also with save_weights), its inputs and expected outputs."""
    import tf_keras

    folder = tmp_path_factory.mktemp("keras_h5")
    x = np.random.default_rng(11).standard_normal((B, keras_files.T, keras_files.F)).astype(np.float32)
    out = {"folder": folder, "x": x}
    for k, name in enumerate(keras_files.MODELS):
        model = keras_files.build_cudnn(name, seed=100 + k)
        model.save(folder / f"{name}.h5")
        twin = keras_files.build_twin(name, tf_keras)
        twin.load_weights(folder / f"{name}.h5")  # tf_keras converts the CuDNN weights itself
        out[name] = keras_files.outputs(twin, x)
        if name == "seq":
            model.save_weights(folder / "seq_weights.h5")
    return out


@pytest.fixture(scope="module")
def converted(files):
    """Each model converted once by graphfix.convert to the default *_cpu.h5; the inputs' hashes before."""
    out = {}
    for name in keras_files.MODELS:
        src = files["folder"] / f"{name}.h5"
        before = _sha(src)
        report = api.convert(src)
        assert report.output == str(files["folder"] / f"{name}_cpu.h5")
        assert _sha(src) == before, "the input was modified"
        out[name] = report
    return out


def _compare(case: str, expected, got) -> None:
    assert len(expected) == len(got)
    err = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
    ERRORS[case] = max(err, ERRORS.get(case, 0.0))
    assert err <= TOL, f"{case}: max error {err}"


@pytest.mark.parametrize("name", list(keras_files.MODELS))
def test_tf_keras_loads_and_matches(files, converted, name):
    import tf_keras
    model = tf_keras.models.load_model(files["folder"] / f"{name}_cpu.h5")
    assert not [l for l in model.submodules if type(l).__name__.startswith("CuDNN")]
    _compare(f"{name} .h5 in tf_keras", files[name], keras_files.outputs(model, files["x"]))


@pytest.mark.parametrize("name", [n for n in keras_files.MODELS if n != "nested_fun"])
def test_keras3_loads_and_matches(files, converted, name):
    import keras
    model = keras.models.load_model(files["folder"] / f"{name}_cpu.h5")
    _compare(f"{name} .h5 in Keras 3", files[name], keras_files.outputs(model, files["x"]))


def test_nested_in_functional_says_to_use_keras_format_for_keras3(converted):
    """Keras 3 cannot load tf_keras's HDF5 config of a nested model in a Functional one (with or without CuDNN)."""
    assert any("-o NAME.keras" in note for note in converted["nested_fun"].notes)
    assert not any("NAME.keras" in note for note in converted["nested_seq"].notes)


@pytest.mark.parametrize("name", ["functional", "nested_fun"])
def test_keras_native_output(files, name):
    import keras
    dst = files["folder"] / f"{name}.keras"
    report = api.convert(files["folder"] / f"{name}.h5", dst)
    assert report.output == str(dst)
    _compare(f"{name} .keras in Keras 3", files[name], keras_files.outputs(keras.models.load_model(dst), files["x"]))


def test_structure_of_the_converted_file(files, converted):
    """CPU classes, no time_major, options and regularizers kept, weights under lstm_cell / gru_cell names."""
    with h5py.File(files["folder"] / "seq_cpu.h5", "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        names = [n.decode() for n in f["model_weights/cu_dnnlstm"].attrs["weight_names"]]
        bias = f["model_weights/cu_dnnlstm"][names[2]].shape
        gru_names = [n.decode() for n in f["model_weights/bidirectional"].attrs["weight_names"]]
        dense = f["model_weights/dense"]["dense/kernel:0"][()]
    with h5py.File(files["folder"] / "seq.h5", "r") as f:
        np.testing.assert_array_equal(dense, f["model_weights/dense/dense/kernel:0"][()])  # copied as it was
    text = json.dumps(config)
    assert "CuDNN" not in text and "time_major" not in text
    lstm, bidi, gru = layers[1], layers[2], layers[3]
    assert lstm["class_name"] == "LSTM" and lstm["config"]["return_sequences"] is True
    assert lstm["config"]["kernel_regularizer"]["class_name"] == "L2"
    assert lstm["config"]["recurrent_constraint"]["class_name"] == "MaxNorm"
    assert bidi["config"]["layer"]["class_name"] == "GRU" and bidi["config"]["layer"]["config"]["reset_after"] is True
    assert gru["config"]["go_backwards"] is True and gru["config"]["recurrent_activation"] == "sigmoid"
    assert names == ["cu_dnnlstm/lstm_cell/kernel:0", "cu_dnnlstm/lstm_cell/recurrent_kernel:0",
                     "cu_dnnlstm/lstm_cell/bias:0"] and bias == (16,)
    assert gru_names[3] == "bidirectional/backward_cu_dnngru/gru_cell/kernel:0"


def test_numpy_reference_on_the_original_weights(files, converted):
    """The first layer of the converted seq model against cuDNN's equations on the file's own CuDNN weights."""
    import keras
    import tf_keras

    from graphfix.cudnn import keras_weights, reference
    with h5py.File(files["folder"] / "seq.h5", "r") as f:
        group = f["model_weights/cu_dnnlstm"]
        weights = [group[n][()] for n in group.attrs["weight_names"]]
    spec, lw = keras_weights.reference_weights("CuDNNLSTM", weights)
    expected, _, _ = reference.forward(spec, [lw], files["x"], np.zeros((1, B, spec.num_units)),
                                       np.zeros((1, B, spec.num_units)), time_major=False)
    for module in (keras, tf_keras):
        model = module.models.load_model(files["folder"] / "seq_cpu.h5")
        first = module.Model(model.inputs, model.layers[0].output)
        _compare(f"seq first layer vs numpy reference in {module.__name__}", [expected],
                 keras_files.outputs(first, files["x"]))


def test_weights_only_file(files):
    import keras
    import tf_keras
    src = files["folder"] / "seq_weights.h5"
    report = api.convert(src, files["folder"] / "seq_weights_cpu.h5")
    assert report.kind == "weights" and len(report.layers) == 4
    for module in (tf_keras, keras):
        twin = keras_files.build_twin("seq", module)
        twin.load_weights(files["folder"] / "seq_weights_cpu.h5")
        _compare(f"seq weights-only in {module.__name__}", files["seq"], keras_files.outputs(twin, files["x"]))
    with pytest.raises(UnsupportedError, match="no model config"):
        api.convert(src, files["folder"] / "w.keras")
    assert not (files["folder"] / "w.keras").exists()


def test_inspect_and_extract(files, capsys):
    import tf_keras
    src = files["folder"] / "seq.h5"
    assert cli.main(["inspect", str(src), "--json"]) == 0
    survey = json.loads(capsys.readouterr().out)
    assert [(l["path"], l["class_name"]) for l in survey["layers"]] == [
        ("cu_dnnlstm", "CuDNNLSTM"), ("bidirectional/forward_cu_dnngru", "CuDNNGRU"),
        ("bidirectional/backward_cu_dnngru", "CuDNNGRU"), ("cu_dnngru_1", "CuDNNGRU")]
    npz = files["folder"] / "seq.npz"
    assert cli.main(["extract", str(src), "-o", str(npz)]) == 0
    twin = keras_files.build_twin("seq", tf_keras)
    twin.load_weights(src)
    arrays = np.load(npz)
    for part, value in zip(("kernel", "recurrent_kernel", "bias"), twin.layers[0].get_weights()):
        np.testing.assert_array_equal(arrays[f"cu_dnnlstm/{part}"], value)


def _bad_inputs(folder):
    """name -> (file, expected exit code, words the one error line must hold)."""
    (folder / "text.h5").write_text("not hdf5 at all\n")
    with h5py.File(folder / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    data = (folder / "seq.h5").read_bytes()
    (folder / "truncated.h5").write_bytes(data[:len(data) // 2])
    for name, edit in (("units.h5", lambda c: c["config"]["layers"][1]["config"].update(units=5)),
                       ("time_major.h5", lambda c: c["config"]["layers"][1]["config"].update(time_major=True))):
        shutil.copy(folder / "seq.h5", folder / name)
        with h5py.File(folder / name, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            edit(config)
            f.attrs["model_config"] = json.dumps(config)
    return {"not hdf5": ("text.h5", InputError.exit_code, "not an HDF5 file"),
            "not keras": ("plain.h5", InputError.exit_code, "not a Keras model or weights file"),
            "truncated": ("truncated.h5", InputError.exit_code, "truncated or damaged"),
            "shapes off config": ("units.h5", LayoutError.exit_code, "layer 'cu_dnnlstm': CuDNNLSTM with units 5"),
            "time_major": ("time_major.h5", UnsupportedError.exit_code, "time_major=True")}


def test_bad_inputs_one_line_nonzero_nothing_written(files, capsys):
    folder = files["folder"] / "bad"
    folder.mkdir()
    shutil.copy(files["folder"] / "seq.h5", folder / "seq.h5")
    for case, (name, code, words) in _bad_inputs(folder).items():
        src, before = folder / name, _sha(folder / name)
        assert cli.main([str(src)]) == code, case
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"graphfix: error: {src}") and words in err[0], (case, err)
        assert err[1:] == ["nothing was written"], (case, err)
        assert _sha(src) == before and not (folder / f"{src.stem}_cpu.h5").exists(), case
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_file_without_cudnn_layers(files, tmp_path, capsys):
    import tf_keras
    src = tmp_path / "cpu.h5"
    keras_files.build_twin("seq", tf_keras).save(src)
    assert cli.main([str(src)]) == 0
    assert "nothing to convert" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [src]


def test_real_command_line(files):
    """`python -m graphfix legacy.h5` in a fresh process, as a user runs it."""
    import subprocess
    import sys
    folder = files["folder"] / "cli"
    folder.mkdir()
    shutil.copy(files["folder"] / "functional.h5", folder / "legacy.h5")
    proc = subprocess.run([sys.executable, "-m", "graphfix", "legacy.h5"], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "converted 4 CuDNN layers" in proc.stdout and (folder / "legacy_cpu.h5").exists()
    assert proc.stderr == ""


def _env():
    import os
    root = __file__.rsplit("/tests/", 1)[0]
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_zz_largest_errors():
    """Print the largest error per case (pytest -s), for the issue's closing note."""
    for case, err in sorted(ERRORS.items()):
        print(f"{case}: {err:.3g}")
    assert all(err <= TOL for err in ERRORS.values())

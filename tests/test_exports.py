"""The run's export cache (xception_edge.exports.Exports): each export is made once per run and
every later request is served from the cache; a SavedModel input is used as it is; a failed
export is one line; the files go with the run's workdir."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from xception_edge import frameworks
from xception_edge.errors import ConversionFailed
from xception_edge.exports import Exports
from xception_edge.model_io import SourceModel


class FakeKeras:
    """Stands in for a keras.Model: counts exports and writes what Keras would write."""

    def __init__(self, fail: str | None = None):
        self.exports: list[str] = []
        self.fail = fail

    def __call__(self, x, training=False):
        return np.zeros((len(x), 3), np.float32)

    def export(self, path, format, **kwargs):
        self.exports.append(format)
        if self.fail:
            raise ValueError(self.fail)
        path = Path(path)
        if format == "onnx":
            path.write_bytes(b"onnx")
        else:
            path.mkdir(parents=True)
            (path / "saved_model.pb").write_bytes(b"pb")


def source(keras_model=None, saved_model_dir=None) -> SourceModel:
    return SourceModel("m.keras", "keras", "0" * 64, 71, 71, 3, keras_model, lambda x: x, saved_model_dir)


@pytest.fixture
def fake_frameworks(monkeypatch):
    """tf2onnx and openvino stand-ins: no framework is imported; convert_model calls are counted."""
    from xception_edge.backends.openvino import convert as ov_convert

    calls = []

    def convert_model(path, input):
        calls.append((path, input))
        return object()

    monkeypatch.setattr(frameworks, "tf2onnx", lambda: None)
    monkeypatch.setattr(ov_convert, "openvino", lambda: types.SimpleNamespace(convert_model=convert_model))
    return calls


def ov_model(exports):
    from xception_edge.backends.openvino.convert import source_model

    return source_model(exports)


def test_a_second_request_is_served_from_the_cache(tmp_path, fake_frameworks):
    keras = FakeKeras()
    exports = Exports(source(keras), tmp_path)
    first = exports.saved_model()
    assert first == tmp_path / "saved_model" and (first / "saved_model.pb").is_file()
    assert exports.saved_model() == first and keras.exports == ["tf_saved_model"]

    onnx = exports.onnx(17)
    assert exports.onnx(17) == onnx and onnx.is_file() and keras.exports == ["tf_saved_model", "onnx"]
    other = exports.onnx(13)  # one export per opset
    assert other != onnx and other.is_file() and keras.exports.count("onnx") == 2

    model = ov_model(exports)  # a backend's own form, cached by key
    assert ov_model(exports) is model and exports.cached("openvino", lambda: 1 / 0) is model
    assert fake_frameworks == [(str(first), [1, 71, 71, 3])]  # from the cached SavedModel, once
    assert keras.exports.count("tf_saved_model") == 1


def test_a_saved_model_input_is_used_as_it_is(tmp_path, fake_frameworks):
    folder = tmp_path / "input-sm"
    folder.mkdir()
    exports = Exports(source(None, folder), tmp_path / "work")
    assert exports.saved_model() == folder
    ov_model(exports)
    assert fake_frameworks == [(str(folder), [1, 71, 71, 3])]
    assert not (tmp_path / "work").exists()  # nothing exported


def test_a_failed_export_is_one_line_and_not_cached(tmp_path, fake_frameworks):
    keras = FakeKeras(fail="tf2onnx cannot convert op Foo\nTraceback (most recent call last): ...")
    exports = Exports(source(keras), tmp_path)
    with pytest.raises(ConversionFailed, match=r"^ONNX export of m.keras failed \(tf2onnx, opset 17\): .* op Foo$"):
        exports.onnx(17)
    with pytest.raises(ConversionFailed, match=r"^SavedModel export of m.keras failed: tf2onnx cannot convert op Foo$"):
        exports.saved_model()
    with pytest.raises(ConversionFailed):
        exports.onnx(17)  # asked again, tried again
    assert keras.exports == ["onnx", "tf_saved_model", "onnx"]


def test_the_run_shares_one_export_and_deletes_it_with_its_workdir(small_model, tmp_path, monkeypatch):
    """Two LiteRT targets of one run: one SavedModel export, requested by both converters, gone
    with the run's workdir once the run ends."""
    from xception_edge import pipeline

    made: list[Exports] = []
    served: list[Path] = []

    class Recording(Exports):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

        def saved_model(self):
            path = super().saved_model()
            assert path.is_relative_to(self.workdir) and (path / "saved_model.pb").is_file()
            served.append(path)
            return path

    monkeypatch.setattr(pipeline, "Exports", Recording)
    model, train, _ = small_model
    req = pipeline.ConvertRequest(
        model=str(model),
        targets=("litert-fp32", "arm64-litert-fp16"),
        out=tmp_path / "out",
        calibration=train,
        verify=False,
    )
    exports_before = []
    real_export = Exports.saved_model

    def counted(self):
        if self._saved_model is None:
            exports_before.append(self.workdir)
        return real_export(self)

    monkeypatch.setattr(Exports, "saved_model", counted)
    results = pipeline.run_convert(req)
    assert [r.ok for r in results] == [True, True]
    assert len(made) == 1 and len(exports_before) == 1  # one cache, one export for both targets
    assert len(served) == 2 and served[0] == served[1]
    assert not made[0].workdir.exists() and not served[0].exists()

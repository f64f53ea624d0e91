"""examples/tfsim_tutorial_digits.py (TF Similarity's tutorial flow on digits) runs top to bottom."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "tfsim_tutorial_digits.py")


def test_tutorial_flow(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tfsim_tutorial_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    res = module.main(
        str(tmp_path), epochs=2, steps_per_epoch=20, verbose=1, projector_method="pca", projector_points=200
    )
    printed = capsys.readouterr().out
    # every step the tutorial shows
    assert "7 classes x 6 examples per class" in printed  # sampler printout
    assert "optimal" in printed and "precision" in printed  # calibration table
    assert len(res["history"]["loss"]) == 2 and len(res["history"]["val_recall@1"]) == 2  # training
    assert res["index"]["size"] == 200 and res["index"]["num_classes"] == 10  # indexing
    for name in ["calibration.png", "confusion_matrix.png", "projector.png"] + [
        f"neighbours_{c}.png" for c in range(10)
    ]:
        assert (tmp_path / name).stat().st_size > 1000, name
    assert [len(row) for row in res["lookup_labels"]] == [5] * 10  # lookups
    assert "optimal" in res["calibration"]
    assert 0.0 <= res["match_accuracy_seen"] <= 1.0 and 0.0 <= res["no_match_rate_unseen"] <= 1.0
    assert res["retrieval"]["recall@1"] > 0.5  # even two short epochs beat chance (0.1) by far
    assert res["reloaded_index"]["size"] == 200 and res["reloaded_lookups_equal"]
    try:
        import plotly  # noqa: F401
    except ImportError:
        pass
    else:
        assert (tmp_path / "projector.html").stat().st_size > 10000
    assert np.isfinite(res["history"]["loss"]).all()

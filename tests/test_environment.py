from flux_perf.instrument.environment import GUIDE_SETTINGS, apply_guide_environment


def test_applies_only_what_matters_and_never_overrides_the_user():
    environ = {"CUDA_MODULE_LOADING": "EAGER"}
    report = {entry["name"]: entry for entry in apply_guide_environment(environ)}
    assert environ["PYTORCH_CUDA_ALLOC_CONF"].startswith("max_split_size_mb:512")
    assert report["PYTORCH_CUDA_ALLOC_CONF"]["status"] == "applied"
    assert environ["CUDA_MODULE_LOADING"] == "EAGER" and report["CUDA_MODULE_LOADING"]["status"] == "user-set"
    assert "TRITON_PTXAS_PATH" not in environ and report["TRITON_PTXAS_PATH"]["status"] == "not applied"
    assert set(report) == {s.name for s in GUIDE_SETTINGS}
    assert all(entry["why"] for entry in report.values())

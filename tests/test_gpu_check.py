"""benchmarks/gpu_check.py on a machine without a GPU: it says so and exits 2; the sections that
run on any array module pass on the CuPy stand-in; the report's verdicts."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tinyunet import backend

from . import fake_cupy

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present: the check would run")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                        str(tmp_path / "x.json")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("no GPU here (") and "measures nothing" in p.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", fake_cupy.make_module())


def test_parity_and_resume_sections_on_the_stand_in(stand_in, tmp_path):
    p = gpu_check.parity()
    assert p["ok"] and p["sgd_max_relative_error"] == 0 and p["adam_max_relative_error"] == 0
    r = gpu_check.resume(tmp_path)
    assert r == dict(resumed_at=5, max_relative_error=0.0, exact=True, ok=True)


def test_the_report_fails_when_a_section_fails():
    good = {"device": {"name": "x"}, "parity": dict(ok=True, sgd_max_relative_error=0.0),
            "tests": dict(ok=True, summary="10 passed")}
    lines, status = gpu_check.summary(good)
    assert status == 0 and lines[0] == "parity     ok" and "  10 passed" in lines
    bad = dict(good, host_sync=dict(ok=False, host_s=2.0))
    lines, status = gpu_check.summary(bad)
    assert status == 1 and "host_sync  FAILED" in lines


def test_median_time_synchronises_every_call():
    calls = []
    t = gpu_check.median_time(lambda: calls.append("f"), 3, lambda: calls.append("s"),
                              warmup=1)
    assert calls == ["f", "s"] * 4 and t >= 0

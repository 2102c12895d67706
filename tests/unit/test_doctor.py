import json

from click.testing import CliRunner

from corral.cli.system import doctor
from corral.doctor import missing_libraries, package_hint, run_checks
from corral.settings import load_settings


def test_doctor_without_a_binary_fails_with_the_fix(corral_home, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no llama-server on PATH either
    checks = {c.name: c for c in run_checks(load_settings(), daemon_alive=False)}
    assert checks["home"].status == "ok"
    assert checks["llama-server"].status == "fail"
    assert "corral update" in checks["llama-server"].fix
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 1
    assert {c["name"] for c in json.loads(result.output)} >= {"home", "disk", "llama-server"}


def test_missing_library_detection_and_hints(tmp_path, monkeypatch):
    import subprocess

    def fake_run(argv, **kw):
        out = (
            "\tlibvulkan.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"
            "\tlibcudart.so.12 => not found\n"
        )
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr("corral.doctor.subprocess.run", fake_run)
    monkeypatch.setattr("corral.doctor.shutil.which", lambda name: "/usr/bin/ldd")
    missing = missing_libraries(tmp_path / "llama-server")
    assert missing == ["libvulkan.so.1", "libcudart.so.12"]
    assert package_hint("libvulkan.so.1") == "libvulkan1"
    assert "CUDA" in package_hint("libcudart.so.12")

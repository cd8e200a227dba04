"""The committed generated code matches proto/ (tools/gen-proto --check)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen-proto"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_file(tmp_path, monkeypatch):
    # The check must be able to fail: compare against a copy with one file edited.
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("gen_proto", str(ROOT / "tools" / "gen-proto"))
    spec = importlib.util.spec_from_loader("gen_proto", loader)
    gen_proto = importlib.util.module_from_spec(spec)
    loader.exec_module(gen_proto)
    stale = tmp_path / "gen"
    for name, text in gen_proto.current().items():
        (stale / name).parent.mkdir(parents=True, exist_ok=True)
        (stale / name).write_text(text)
    target = stale / "conversion_matcher" / "v1" / "pixels_pb2.py"
    target.write_text(target.read_text() + "\n# edited\n")
    monkeypatch.setattr(gen_proto, "OUT", stale)
    monkeypatch.setattr(sys, "argv", ["gen-proto", "--check"])
    assert gen_proto.main() == 1

"""`make serve` writes a development token file the server accepts, and never overwrites one."""

import json
import subprocess
import sys
from pathlib import Path

from server.auth import TokenTable

TOOL = Path(__file__).resolve().parent.parent / "tools" / "make-dev-tokens"


def test_writes_a_private_file_the_server_loads(tmp_path):
    path = tmp_path / "var" / "tokens.json"
    done = subprocess.run([sys.executable, str(TOOL), str(path)], capture_output=True, text=True, check=True)
    data = json.loads(path.read_text())
    tokens = data["tokens"]
    assert len(tokens) == 2 and all(len(t) >= 32 for t in tokens)
    assert sorted(bool(v.get("ingest")) for v in tokens.values()) == [False, True]
    assert path.stat().st_mode & 0o077 == 0
    TokenTable.load(path)
    assert all(token in done.stderr for token in tokens)  # shown once, to the person who ran it


def test_keeps_an_existing_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": {}}')
    subprocess.run([sys.executable, str(TOOL), str(path)], check=True)
    assert path.read_text() == '{"tokens": {}}'

"""``python -m bench actions`` runs end to end on a tiny workload (figures are not checked: no
timing asserts), including its check that every result form agrees with the others."""

import json
import subprocess
import sys

import pytest

import matcher


@pytest.mark.skipif(not matcher.ACTION_SET_COMPILED, reason="the benchmark needs the compiled kernel")
def test_actions_bench_prints_every_form_side_by_side(tmp_path):
    out = tmp_path / "actions.json"
    done = subprocess.run([sys.executable, "-m", "bench", "actions", "--ads", "400", "--actions", "600",
                           "--twin-sample", "200", "--reference-sample", "5", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for form in ("compiled match_batch,", "compiled match_batch_detail,", "compiled match_columns,",
                 "compiled match_columns_detail,", "twin match_batch", "reference"):
        assert form in done.stdout
    # the JSON records the compiled kernel it ran, and a rate for every form
    data = json.loads(out.read_text())
    assert data["compiled_extension"] is True
    assert all(data[key] > 0 for key in ("match_batch_detail_actions_per_s", "match_columns_actions_per_s",
                                         "match_columns_detail_actions_per_s"))

"""The committed stubs in gen/ are exactly what `make protos` makes now."""

import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_protos(tmp_path):
    subprocess.run(
        [str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(REPO / "gen")
        for p in (REPO / "gen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "gen/ is out of date: run `make protos`"
    for rel in fresh:
        assert filecmp.cmp(tmp_path / rel, REPO / "gen" / rel, shallow=False), (
            f"{rel} drifted: run `make protos`"
        )

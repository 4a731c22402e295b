"""OptInter's frequency filter as a step of `recsys-dist prepare`: counted once, reused by training."""

import json

from recsys_dist.cli import main


def test_prepare_runs_the_cross_counting_pass(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    assert main(["synth", f"synth.out_dir={raw}", "synth.days=2", "synth.rows_per_day=3000"]) == 0
    args = ["prepare", "--input", str(raw), "--out", str(out), "prepare.categorical=vocab", "prepare.workers=1",
            'data.cross_pairs=["C6,C25","C9,C25"]', "data.cross_min_count=5"]
    assert main(args) == 0
    assert "cross features: 2 pair(s)" in capsys.readouterr().out
    [folder] = (out / "cross_counts").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["min_count"] == 5 and set(manifest["pairs"]) == {"C6xC25", "C9xC25"}
    assert all(0 < p["frequent"] <= p["buckets"] for p in manifest["pairs"].values())
    stamp = {f.name: f.stat().st_mtime_ns for f in folder.glob("*.npy")}
    assert len(stamp) == 2

    # training's cross_features finds the counts instead of counting again
    from recsys_dist.config import load_config
    from recsys_dist.data.cross_features import cross_features
    from recsys_dist.data.metadata import Metadata

    cfg = load_config(None, [f"data.dir={out}", 'data.cross_pairs=["C6,C25","C9,C25"]', "data.cross_min_count=5"])
    tables, _ = cross_features(cfg, Metadata.load(out))
    assert [t.feature for t in tables] == ["C6xC25", "C9xC25"]
    assert {f.name: f.stat().st_mtime_ns for f in folder.glob("*.npy")} == stamp

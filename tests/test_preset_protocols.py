"""Each paper's Criteo preset prepares data by that paper's protocol (docs/arches.md, "Data protocol per preset")."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_dist.config import load_config

CONFIGS = Path(__file__).parent.parent / "configs"
R = "ratio"
# preset: (split, val_ratio, test_ratio, categorical, min_count, dense); None = not part of the protocol
PROTOCOLS = {
    # OptInter Sec. III-A: random 80% train + val / 20% test, < 20 times -> OOV, numerics min-max (eq. 20)
    "optinter_search_criteo_kaggle": (R, 0.1, 0.2, "vocab", 20, "minmax"),
    "optinter_retrain_criteo_kaggle": (R, 0.1, 0.2, "vocab", 20, "minmax"),
    "optinter_m_criteo_kaggle": (R, 0.1, 0.2, "vocab", 20, "minmax"),
    # OptFusion Sec. 4.1.1 and the authors' criteo2TF.py: random 8:1:1, min_count 2, floor(log(x)^2) buckets
    "optfusion_criteo_kaggle": (R, 0.1, 0.1, "vocab", 2, "bucketize"),
    "optfusion_retrain_criteo_kaggle": (R, 0.1, 0.1, "vocab", 2, "bucketize"),
    "optfusion_criteo_terabyte": ("day", None, None, "vocab", 2, "bucketize"),
    "optfusion_retrain_criteo_terabyte": ("day", None, None, "vocab", 2, "bucketize"),
    # DynInt Sec. 4.1.1 (and xDeepInt, its predecessor): random 70/10/20, < 20 times removed, buckets
    "dynint_criteo_kaggle": (R, 0.1, 0.2, "vocab", 20, "bucketize"),
    "xdeepint_criteo_kaggle": (R, 0.1, 0.2, "vocab", 20, "bucketize"),
    # MaskFusion Appendix: DLRM's processing, Kaggle days 1-6 train / day 7 test, Terabyte days 0-22 / day 23
    "maskfusion_criteo_kaggle": ("criteo_kaggle", None, None, "hash", None, "log"),
    "maskfusion_criteo_terabyte": ("day", None, None, "hash", None, "log"),
    # DeepMR Sec. 4.1.2 (its datasets are not Criteo): random 8:1:1
    "deepmr_criteo_kaggle": (R, 0.1, 0.1, None, None, "bucketize"),
}


@pytest.mark.parametrize("preset", sorted(PROTOCOLS))
def test_paper_presets_follow_their_data_protocol(preset):
    """Defect caught: a paper's preset drifting from the paper's split, min count or numeric transform (e.g. OptInter
    back on log instead of eq. 20's min-max, MaskFusion on a random split instead of DLRM's day split)."""
    p = load_config(CONFIGS / f"{preset}.yaml").prepare
    split, val, test, categorical, min_count, dense = PROTOCOLS[preset]
    assert (p.split, p.dense) == (split, dense)
    if val is not None:
        assert (p.val_ratio, p.test_ratio) == (val, test)
    if categorical is not None:
        assert p.categorical == categorical
    if min_count is not None:
        assert (p.categorical, p.min_count) == ("vocab", min_count)


def test_presets_sharing_a_data_folder_prepare_it_the_same_way():
    """Defect caught: two presets writing one prepared folder with different protocols (e.g. OptFusion's min count
    2 and DynInt's 20 both in prepared_bucketized): preparing for one silently changes the other's data."""
    by_dir: dict = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        if not cfg.prepare.input:
            continue
        assert cfg.data.dir == cfg.prepare.out_dir, path.name
        by_dir.setdefault(cfg.prepare.out_dir, []).append((path.name, cfg.prepare))
    for folder, presets in by_dir.items():
        first_name, first = presets[0]
        for name, p in presets[1:]:
            assert p == first, f"{name} and {first_name} both prepare {folder} but differently"

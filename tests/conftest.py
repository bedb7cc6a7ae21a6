import os
from pathlib import Path

import pytest

# Tripwire: nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
HIT_UAV = Path(os.environ.get("THERMGEN_HIT_UAV", REPO.parent / "shared" / "data" / "hit-uav"))


@pytest.fixture(scope="session")
def hit_uav_root() -> Path:
    """The HIT-UAV subset beside the repository (../shared/data/hit-uav); tests skip without it."""
    if not (HIT_UAV / "normal_json" / "annotations").is_dir():
        pytest.skip(f"HIT-UAV not found at {HIT_UAV} (set THERMGEN_HIT_UAV)")
    return HIT_UAV

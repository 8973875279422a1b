"""``fmri-pain demo`` finds its spec wherever the package is (source tree or installed)."""

from fmri_pain.config.spec import load_spec
from fmri_pain.pipeline.demo import DEMO_SPEC


def test_the_demo_spec_is_found_and_loads():
    assert DEMO_SPEC.is_file(), DEMO_SPEC
    spec = load_spec(DEMO_SPEC)
    assert spec.conditions == ("SCS", "DRGS", "DUAL")

"""The image build pins the ceremony's first trust root only if it verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.protocol import trust
from firmware.shared.errors import RefusedError
from scripts.image import layer
from tests.protocol.test_trust import Repo, signed


def test_the_image_pins_only_a_trust_root_that_verifies(tmp_path: Path) -> None:
    """scripts/image/layer.pin_trust_root: the ceremony's first root goes into the root
    filesystem as it is; a root short of its own threshold stops the build."""
    root = tmp_path / "root"
    (root / "usr/lib/coalmine").mkdir(parents=True)
    good = tmp_path / "1.json"
    good.write_bytes(signed("root", Repo().root_payload(1), [0, 1]))
    layer.pin_trust_root(root, good)
    pinned = root / "usr/lib/coalmine/trust-root.json"
    assert pinned.read_bytes() == good.read_bytes() and pinned.stat().st_mode & 0o777 == 0o644
    assert trust.first_root(pinned.read_bytes()).version == 1
    short = tmp_path / "short.json"
    short.write_bytes(signed("root", Repo().root_payload(1), [0]))
    with pytest.raises(RefusedError, match="1 valid root signature"):
        layer.pin_trust_root(tmp_path / "other", short)

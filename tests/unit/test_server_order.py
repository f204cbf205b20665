"""Version order on the server (pdserver/order.py): as `sort -V` orders versions, checked
against GNU sort itself on fixed cases and on random versions."""

from __future__ import annotations

import random
import subprocess

import pytest

from pdserver.order import sorts_before, version_lt


def gnu_sorts_before(a: str, b: str) -> bool:
    out = subprocess.run(
        ["sort", "-V"], input=f"{a}\n{b}\n", capture_output=True, text=True, env={"LC_ALL": "C"}, check=True
    )
    return a != b and out.stdout.splitlines()[0] == a


@pytest.mark.parametrize(
    ("a", "b", "lt"),
    [
        ("1.9.0", "1.10.0", True),
        ("1.10.0", "1.9.0", False),
        ("1.4.0-rc.1", "1.4.0", True),
        ("1.4.0", "1.4.0-rc.1", False),
        ("1.4.0-rc.1", "1.4.0-rc.2", True),
        ("1.4.0-rc.10", "1.4.0-rc.9", False),
        ("1.4.0", "1.4.0", False),
        ("2.0.0-alpha", "2.0.0-beta", True),
        ("1.0.0", "1.0.0.1", True),
        ("1.01.0", "1.1.0", True),  # equal as versions: sort -V falls back to byte order
    ],
)
def test_semantic_version_order(a, b, lt):
    assert version_lt(a, b) is lt


ALPHABET = "0123456789" * 3 + "abcxyzABZ._-~"


@pytest.mark.parametrize("seed", range(4))
def test_the_order_is_gnu_sorts_on_random_versions(seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(150):
        a = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 9)))
        b = a if rng.random() < 0.1 else "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 9)))
        if rng.random() < 0.4:  # near misses: the same release, a part changed
            b = a[: rng.randint(0, len(a))] + rng.choice(ALPHABET) + a[rng.randint(0, len(a)) :]
        pairs.append((a, b))
    wrong = [(a, b) for a, b in pairs if sorts_before(a, b) != gnu_sorts_before(a, b)]
    assert not wrong, wrong[:5]

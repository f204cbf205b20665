"""The ways to put a version in place, one module each, found by name:

    switch_NAME.py   `switch: NAME` of the compose engine (slots, the default; recreate)
    engine_NAME.py   `engine: NAME` (swarm); `compose` is the engine of the switches

Each module names its pipeline.Strategy subclass `Strategy`. A file added here is a new
choice on both sides at once: the settings schema takes its choices from these names (the
client checks invoke.yaml with them, the server ENV.conf), pipeline.strategy_for imports
the module a setting names, and the server side ships every module of this folder. The
built-in strategies live beside the package (slots.py, recreate.py, stack.py) and are
named here; a new one can live here whole.
"""

from __future__ import annotations

import os

FOLDER = os.path.dirname(os.path.abspath(__file__))


def names(kind: str) -> tuple:
    """The strategies of KIND (switch, engine) this server side has, sorted."""
    prefix = kind + "_"
    return tuple(
        sorted(
            name[len(prefix) : -3] for name in os.listdir(FOLDER) if name.startswith(prefix) and name.endswith(".py")
        )
    )


def module(engine: str, switch: str) -> str:
    """The module (in this package) of the strategy these settings select."""
    return f"switch_{switch}" if engine == "compose" else f"engine_{engine}"

"""An environment in which every download fails at once: for testing offline first runs."""

from __future__ import annotations

import os
from pathlib import Path

# A closed loopback port: a download through this proxy fails at once, on any machine.
CLOSED_PROXY = "http://127.0.0.1:9"


def offline_env(keras_home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with an empty KERAS_HOME and downloads sent nowhere."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "all_proxy"}}
    env.update(
        KERAS_HOME=str(keras_home),
        https_proxy=CLOSED_PROXY,
        HTTPS_PROXY=CLOSED_PROXY,
        http_proxy=CLOSED_PROXY,
        HTTP_PROXY=CLOSED_PROXY,
        **extra,
    )
    return env

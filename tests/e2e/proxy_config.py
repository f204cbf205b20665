"""A changed proxy configuration for staging, as a user's next commit would bring."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ROOT

PIXEL_CONF = ROOT / "example/docker/etc/nginx/conf.d/pixel.conf"


def changed_staging_config(tmp_path: Path, change) -> Path:
    """An invoke config (for `inv -f`) whose staging ships change(pixel.conf's text)."""
    conf = tmp_path / "pixel.conf"
    conf.write_text(change(PIXEL_CONF.read_text()))
    config = tmp_path / "changed.yaml"
    config.write_text(
        "deploy:\n  environments:\n    staging:\n      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {conf}\n"
    )
    return config

"""The code location: every asset, check, resource, job, schedule and sensor."""

from __future__ import annotations

import dagster as dg

from rec_assets import assets as asset_package
from rec_assets.resources import resources_for_profile

_all_assets = dg.load_assets_from_package_module(asset_package)
_all_checks = dg.load_asset_checks_from_package_module(asset_package)

defs = dg.Definitions(
    assets=_all_assets,
    asset_checks=_all_checks,
    resources=resources_for_profile(),
)

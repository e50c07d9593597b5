"""The code location: every asset, check, resource, job, schedule and sensor."""

import dagster as dg

from rec_assets import assets as asset_package
from rec_assets.executors import executor_for_environment
from rec_assets.jobs import ingest_job, main_job, retrain_job, rollback_release
from rec_assets.resources import resources_for_profile
from rec_assets.schedules import nightly_retrain_schedule
from rec_assets.sensors import interaction_landing_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(asset_package),
    asset_checks=dg.load_asset_checks_from_package_module(asset_package),
    jobs=[main_job, retrain_job, ingest_job, rollback_release],
    schedules=[nightly_retrain_schedule],
    sensors=[interaction_landing_sensor],
    resources=resources_for_profile(),
    executor=executor_for_environment(),
)

"""Nightly retraining: the model, serving and feature-store groups, on the latest data."""

import dagster as dg

from rec_assets.jobs import retrain_job

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain at 02:00 UTC; the blocking quality check keeps a worse model from being served.",
)

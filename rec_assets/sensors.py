"""The landing sensor: new interaction files trigger ingestion and retraining.

The cursor records every file's content hash already handled (accepted or rejected), so no file
is read twice; a malformed file is reported in the sensor's log and never ingested.
"""

import json
import os
from pathlib import Path

import dagster as dg

from rec_assets.jobs import ingest_job
from rec_core.data.landing import scan_landing, validate_landing_file
from rec_core.data.validation import DataValidationError


def landing_dir() -> Path:
    """`REC_LANDING_DIR`, else `data/landing` under the working directory."""
    return Path(os.environ.get("REC_LANDING_DIR", Path.cwd() / "data" / "landing"))


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing directory for new interaction files (parquet or CSV).",
)
def interaction_landing_sensor(context: dg.SensorEvaluationContext):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    accepted, rejected = [], []
    for landing in scan_landing(landing_dir()):
        if landing.digest in seen:
            continue
        try:
            rows = len(validate_landing_file(landing.path))
        except DataValidationError as exc:
            context.log.warning(f"rejected landing file: {exc}")
            seen[landing.digest] = "rejected"
            rejected.append(Path(landing.path).name)
            continue
        seen[landing.digest] = "accepted"
        accepted.append((landing, rows))
    requests = [
        dg.RunRequest(
            run_key=landing.digest,
            run_config={"ops": {"interactions": {"config": {"landing_files": [landing.path]}}}},
            tags={"landing_file": Path(landing.path).name, "landing_rows": str(rows)},
        )
        for landing, rows in accepted
    ]
    if not requests:
        reason = f"rejected {', '.join(rejected)}" if rejected else "no new landing files"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(seen))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))

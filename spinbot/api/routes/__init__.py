"""One APIRouter per resource: uploads, jobs, artifacts, meta (health, metrics, pipelines, params)."""

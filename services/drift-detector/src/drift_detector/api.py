"""HTTP API: drift state, live quality, A/B evaluations and the Evidently reports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from drift_detector.detector import DriftDetector
from drift_detector.reports import ReportStore
from mlops_platform.auth import Role, require


def get_detector(request: Request) -> DriftDetector:
    detector: DriftDetector = request.app.state.detector
    return detector


def get_reports(request: Request) -> ReportStore:
    store: ReportStore = request.app.state.reports
    return store


DetectorDep = Annotated[DriftDetector, Depends(get_detector)]
ReportsDep = Annotated[ReportStore, Depends(get_reports)]

# Every route reads: a viewer key (or any role) is needed.
router = APIRouter(tags=["drift"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("/drift")
def drift(detector: DetectorDep) -> dict[str, Any]:
    """Current drift state: PSI and level per feature of the latest window, state machine, window in force."""
    return detector.drift_view()


@router.get("/quality")
def quality(detector: DetectorDep) -> dict[str, Any]:
    """Live model quality per model version and A/B arm, against each version's training baseline."""
    return detector.quality_view()


@router.get("/evaluations")
def evaluations(detector: DetectorDep) -> dict[str, Any]:
    """A/B evaluations published so far (newest first) and the progress of the current pair."""
    return detector.evaluations_view()


@router.get("/reports", tags=["reports"])
def list_reports(store: ReportsDep) -> dict[str, Any]:
    """Evidently drift reports kept on disk (newest first), with their status and window."""
    return {"reports": [meta.public() for meta in store.list()]}


@router.get(
    "/reports/{report_id}",
    tags=["reports"],
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}}, "description": "The report"},
        202: {"description": "Still being generated; retry later"},
        404: {"description": "Unknown (or already deleted) report"},
        500: {"description": "Generation failed or was dropped"},
    },
)
def get_report(report_id: str, store: ReportsDep) -> Response:
    """One Evidently report as HTML (202 while it is being generated)."""
    meta = store.get(report_id)
    if meta is None:
        raise HTTPException(status_code=404, detail=f"no report {report_id!r}")
    if meta.status == "pending":
        return JSONResponse(
            {"id": report_id, "status": "pending"}, status_code=202, headers={"Retry-After": "2"}
        )
    if meta.status != "ready":
        return JSONResponse({"id": report_id, "status": meta.status, "error": meta.error}, status_code=500)
    path = store.html_path(report_id)
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"report {report_id!r} is no longer on disk")
    return FileResponse(path, media_type="text/html")

"""The Confluent Schema Registry REST API (the subset documented in the README).

The same router is mounted at the root and under ``/apis/ccompat/v7`` (Apicurio's compatibility
path, which is the project's configured base URL). Confluent clients append paths to the base URL,
so both spellings must answer identically.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from schema_registry_server.compatibility import CompatibilityLevel
from schema_registry_server.errors import RegistryError
from schema_registry_server.registry import SchemaRegistry, VersionInfo, parse_version

COMPAT_PREFIX = "/apis/ccompat/v7"
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryJSONResponse(JSONResponse):
    """JSON with the schema registry media type (clients accept it and plain JSON)."""

    media_type = MEDIA_TYPE


router = APIRouter(default_response_class=RegistryJSONResponse)


def _registry(request: Request) -> SchemaRegistry:
    registry: SchemaRegistry | None = getattr(request.app.state, "registry", None)
    if registry is None or not registry.loaded:
        raise RegistryError.not_ready()
    return registry


def _metrics_incompatible(request: Request) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.incompatible.inc()


async def _json_body(request: Request) -> Any:
    # Parsed by hand so that any content type works: Confluent accepts its own media types, plain
    # JSON and octet-stream, and curl users often send none.
    raw = await request.body()
    if not raw.strip():
        raise RegistryError(400, 400, "Request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RegistryError(400, 400, f"Malformed JSON request body: {exc}") from None


def _schema_text(body: Any, *, registering: bool = False) -> str:
    """Validate a schema request body and return the schema text."""
    if not isinstance(body, dict):
        raise RegistryError.invalid_schema("The request body must be a JSON object with a 'schema' field")
    schema_type = body.get("schemaType") or "AVRO"
    if not isinstance(schema_type, str) or schema_type.upper() != "AVRO":
        raise RegistryError.invalid_schema(
            f"Schema type {schema_type!r} is not supported: this registry only supports AVRO"
        )
    if body.get("references"):
        raise RegistryError.invalid_schema(
            "Schema references are not supported by this registry: inline the referenced named types"
        )
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise RegistryError.invalid_schema(
                f"'{unsupported}' (data contracts) is not supported by this registry"
            )
    if registering and (body.get("id") is not None or body.get("version") is not None):
        raise RegistryError.operation_not_permitted(
            "Registering with an explicit id or version needs IMPORT mode, "
            "which this registry does not support"
        )
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise RegistryError.invalid_schema("Empty schema: the 'schema' field must be a non-empty string")
    return schema


def _level_from_body(body: Any) -> CompatibilityLevel:
    # Confluent clients send "compatibility"; some tools send "compatibilityLevel" (the GET spelling).
    value = body.get("compatibility", body.get("compatibilityLevel")) if isinstance(body, dict) else None
    try:
        return CompatibilityLevel.parse(value)
    except ValueError:
        raise RegistryError.invalid_compatibility_level(value) from None


def _page(items: list[Any], offset: int, limit: int) -> list[Any]:
    start = max(offset, 0)
    return items[start:] if limit < 0 else items[start : start + limit]


def _version_body(info: VersionInfo) -> dict[str, Any]:
    # Like Confluent, "schemaType" is omitted for AVRO (the default every client assumes).
    return {"subject": info.subject, "version": info.version, "id": info.schema_id, "schema": info.schema}


def _raw_schema(text: str) -> Response:
    return Response(content=text, media_type=MEDIA_TYPE)


# -- root and schemas --------------------------------------------------------------------------------


@router.get("/")
async def root() -> dict[str, Any]:
    """Confluent answers an empty object at the root; clients use it as a connectivity check."""
    return {}


@router.get("/schemas/types")
async def schema_types() -> list[str]:
    """Supported schema types."""
    return ["AVRO"]


@router.get("/contexts")
async def contexts() -> list[str]:
    """Only the default context exists."""
    return ["."]


@router.get("/schemas")
async def list_schemas(
    request: Request,
    subject_prefix: str = Query("", alias="subjectPrefix"),
    deleted: bool = False,
    latest_only: bool = Query(False, alias="latestOnly"),
    offset: int = 0,
    limit: int = -1,
) -> list[dict[str, Any]]:
    """Every (or every latest) version of every subject."""
    registry = _registry(request)
    found: list[dict[str, Any]] = []
    for subject in registry.subjects(include_deleted=deleted, prefix=subject_prefix):
        try:
            versions = registry.versions(subject, include_deleted=deleted)
        except RegistryError:
            continue  # deleted meanwhile
        if latest_only:
            versions = versions[-1:]
        for version in versions:
            try:
                found.append(_version_body(registry.get_version(subject, version, include_deleted=deleted)))
            except RegistryError:
                continue
    return _page(found, offset, limit)


@router.get("/schemas/ids/{schema_id}")
async def schema_by_id(request: Request, schema_id: int, subject: str | None = None) -> dict[str, Any]:
    """The schema of a global id (``subject`` and ``format`` are accepted for client compatibility)."""
    return {"schema": _registry(request).schema_by_id(schema_id)}


@router.get("/schemas/ids/{schema_id}/schema")
async def raw_schema_by_id(request: Request, schema_id: int) -> Response:
    """The bare schema JSON of a global id."""
    return _raw_schema(_registry(request).schema_by_id(schema_id))


@router.get("/schemas/ids/{schema_id}/versions")
async def versions_of_id(request: Request, schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
    """Subject versions that use a global id."""
    pairs = _registry(request).versions_of_id(schema_id, include_deleted=deleted)
    return [{"subject": subject, "version": version} for subject, version in pairs]


@router.get("/schemas/ids/{schema_id}/subjects")
async def subjects_of_id(request: Request, schema_id: int, deleted: bool = False) -> list[str]:
    """Subjects that use a global id."""
    pairs = _registry(request).versions_of_id(schema_id, include_deleted=deleted)
    return sorted({subject for subject, _ in pairs})


# -- subjects ----------------------------------------------------------------------------------------


@router.get("/subjects")
async def list_subjects(
    request: Request,
    deleted: bool = False,
    deleted_only: bool = Query(False, alias="deletedOnly"),
    subject_prefix: str = Query("", alias="subjectPrefix"),
    offset: int = 0,
    limit: int = -1,
) -> list[str]:
    """Subject names (soft-deleted ones only with ``deleted=true``)."""
    subjects = _registry(request).subjects(
        include_deleted=deleted, deleted_only=deleted_only, prefix=subject_prefix
    )
    return _page(subjects, offset, limit)


@router.get("/subjects/{subject}/versions")
async def list_versions(
    request: Request,
    subject: str,
    deleted: bool = False,
    deleted_only: bool = Query(False, alias="deletedOnly"),
    offset: int = 0,
    limit: int = -1,
) -> list[int]:
    """Version numbers of a subject."""
    versions = _registry(request).versions(subject, include_deleted=deleted, deleted_only=deleted_only)
    return _page(versions, offset, limit)


@router.get("/subjects/{subject}/versions/{version}")
async def get_version(request: Request, subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
    """One version: ``latest`` / ``-1`` or a number."""
    info = _registry(request).get_version(subject, parse_version(version), include_deleted=deleted)
    return _version_body(info)


@router.get("/subjects/{subject}/versions/{version}/schema")
async def get_version_schema(request: Request, subject: str, version: str, deleted: bool = False) -> Response:
    """The bare schema JSON of one version."""
    info = _registry(request).get_version(subject, parse_version(version), include_deleted=deleted)
    return _raw_schema(info.schema)


@router.get("/subjects/{subject}/versions/{version}/referencedby")
async def referenced_by(request: Request, subject: str, version: str) -> list[int]:
    """Always empty: schema references are not supported."""
    _registry(request).get_version(subject, parse_version(version))
    return []


@router.post("/subjects/{subject}/versions")
async def register(request: Request, subject: str, normalize: bool = False) -> dict[str, Any]:
    """Register a schema (idempotent). ``normalize`` is accepted; canonicalisation always applies."""
    registry = _registry(request)
    schema = _schema_text(await _json_body(request), registering=True)
    try:
        info = await run_in_threadpool(registry.register, subject, schema)
    except RegistryError as exc:
        if exc.error_code == 409:
            _metrics_incompatible(request)
        raise
    return {"id": info.schema_id, "version": info.version, "subject": info.subject}


@router.post("/subjects/{subject}")
async def lookup(
    request: Request, subject: str, normalize: bool = False, deleted: bool = False
) -> dict[str, Any]:
    """Is this schema registered under the subject? Returns the version or 40401 / 40403."""
    schema = _schema_text(await _json_body(request))
    registry = _registry(request)
    info = await run_in_threadpool(lambda: registry.lookup(subject, schema, include_deleted=deleted))
    return _version_body(info)


@router.delete("/subjects/{subject}/versions/{version}")
async def delete_version(request: Request, subject: str, version: str, permanent: bool = False) -> int:
    """Soft delete a version; ``permanent=true`` removes an already soft-deleted one."""
    registry = _registry(request)
    spec = parse_version(version)
    return await run_in_threadpool(lambda: registry.delete_version(subject, spec, permanent=permanent))


@router.delete("/subjects/{subject}")
async def delete_subject(request: Request, subject: str, permanent: bool = False) -> list[int]:
    """Soft delete a subject; ``permanent=true`` removes an already soft-deleted one."""
    registry = _registry(request)
    return await run_in_threadpool(lambda: registry.delete_subject(subject, permanent=permanent))


# -- compatibility -----------------------------------------------------------------------------------


async def _compatibility(
    request: Request, subject: str, version: str | None, verbose: bool
) -> dict[str, Any]:
    registry = _registry(request)
    schema = _schema_text(await _json_body(request))
    spec = parse_version(version) if version is not None else None
    result = await run_in_threadpool(registry.test_compatibility, subject, schema, spec)
    return {"is_compatible": result.is_compatible, "messages": result.messages() if verbose else []}


@router.post("/compatibility/subjects/{subject}/versions/{version}")
async def check_against_version(
    request: Request, subject: str, version: str, verbose: bool = False, normalize: bool = False
) -> dict[str, Any]:
    """Would the schema be compatible with this version (``latest`` included) under the subject's level?"""
    return await _compatibility(request, subject, version, verbose)


@router.post("/compatibility/subjects/{subject}/versions")
async def check_against_all(
    request: Request, subject: str, verbose: bool = False, normalize: bool = False
) -> dict[str, Any]:
    """Would registering the schema be accepted (latest or all versions, per the level)?"""
    return await _compatibility(request, subject, None, verbose)


# -- config ------------------------------------------------------------------------------------------


@router.get("/config")
async def get_global_config(request: Request) -> dict[str, Any]:
    """The global compatibility level."""
    return {"compatibilityLevel": _registry(request).global_compatibility().value}


@router.put("/config")
async def put_global_config(request: Request) -> dict[str, Any]:
    """Set the global compatibility level."""
    registry = _registry(request)
    level = _level_from_body(await _json_body(request))
    await run_in_threadpool(registry.set_compatibility, None, level)
    return {"compatibility": level.value}


@router.delete("/config")
async def delete_global_config(request: Request) -> dict[str, Any]:
    """Reset the global level to the server default; returns the level that was in force."""
    registry = _registry(request)
    previous = await run_in_threadpool(registry.delete_compatibility, None)
    return {"compatibilityLevel": previous.value}


@router.get("/config/{subject}")
async def get_subject_config(
    request: Request, subject: str, default_to_global: bool = Query(False, alias="defaultToGlobal")
) -> dict[str, Any]:
    """A subject's level (40408 if unset, unless ``defaultToGlobal=true``)."""
    level = _registry(request).subject_compatibility(subject, default_to_global=default_to_global)
    return {"compatibilityLevel": level.value}


@router.put("/config/{subject}")
async def put_subject_config(request: Request, subject: str) -> dict[str, Any]:
    """Set a subject's compatibility level (the subject does not need to exist yet)."""
    registry = _registry(request)
    level = _level_from_body(await _json_body(request))
    await run_in_threadpool(registry.set_compatibility, subject, level)
    return {"compatibility": level.value}


@router.delete("/config/{subject}")
async def delete_subject_config(request: Request, subject: str) -> dict[str, Any]:
    """Remove a subject's level (it falls back to the global one); returns the removed level."""
    registry = _registry(request)
    previous = await run_in_threadpool(registry.delete_compatibility, subject)
    return {"compatibilityLevel": previous.value}


# -- mode --------------------------------------------------------------------------------------------


@router.get("/mode")
async def get_mode() -> dict[str, str]:
    """Always READWRITE (IMPORT / READONLY are not supported)."""
    return {"mode": "READWRITE"}


@router.get("/mode/{subject}")
async def get_subject_mode(subject: str) -> dict[str, str]:
    """Always READWRITE."""
    return {"mode": "READWRITE"}


async def _put_mode(request: Request) -> dict[str, str]:
    body = await _json_body(request)
    mode = body.get("mode") if isinstance(body, dict) else None
    if not isinstance(mode, str) or mode.upper() != "READWRITE":
        raise RegistryError.invalid_mode(mode)
    return {"mode": "READWRITE"}


@router.put("/mode")
async def put_mode(request: Request) -> dict[str, str]:
    """Accepts READWRITE only."""
    return await _put_mode(request)


@router.put("/mode/{subject}")
async def put_subject_mode(request: Request, subject: str) -> dict[str, str]:
    """Accepts READWRITE only."""
    return await _put_mode(request)

"""Subjects, versions, ids and compatibility settings: the registry's rules on top of the log.

Concurrency model (one registry instance per schemas topic):

* every change takes ``_write_lock``, decides from the current state, appends its records to the log
  and waits for Kafka's acknowledgement, then applies the same records to memory. Holding one lock
  across decide + write + apply is what keeps ids and version numbers unique without consensus;
  it is also why two registry processes must never write to the same topic;
* reads take ``_state_lock`` only for the moment they copy what they need, so they never wait for
  Kafka;
* replay at start-up and the in-memory apply after a write use the same ``_State.apply``: the memory
  is always what a restart would rebuild from the log.

If a write is not acknowledged, part of a batch may still have reached the log. The registry then
marks its memory stale and rebuilds it from the log (right away, or before the next write if Kafka
is still unavailable), so the log remains the only source of truth.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

import structlog

from schema_registry_server.compatibility import (
    CompatibilityLevel,
    CompatibilityResult,
    InvalidSchemaError,
    ParsedSchema,
    check_compatibility,
    parse_schema,
)
from schema_registry_server.errors import RegistryError
from schema_registry_server.records import ConfigRecord, IdWatermarkRecord, LogRecord, SchemaRecord
from schema_registry_server.store import SchemaLog, StorageError

log = structlog.get_logger(__name__)

LATEST: Final = "latest"
VersionSpec = int | Literal["latest"]
_MAX_VERSION = 2**31 - 1


def parse_version(text: str) -> VersionSpec:
    """Parse a version path segment: ``latest``, ``-1`` (latest) or 1..2^31-1 (else 42202)."""
    if text == LATEST or text == "-1":
        return LATEST
    try:
        version = int(text)
    except ValueError:
        raise RegistryError.invalid_version(text) from None
    if not 1 <= version <= _MAX_VERSION:
        raise RegistryError.invalid_version(text)
    return version


@dataclass(frozen=True)
class VersionInfo:
    """One version of a subject as the API returns it."""

    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool = False


@dataclass
class _State:
    """In-memory index rebuilt from the log; ``apply`` is the only mutator."""

    versions: dict[str, dict[int, VersionInfo]] = field(default_factory=dict)
    id_schema: dict[int, str] = field(default_factory=dict)
    id_refs: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    id_canonical: dict[int, str] = field(default_factory=dict)
    canonical_ids: dict[str, int] = field(default_factory=dict)
    configs: dict[str | None, CompatibilityLevel] = field(default_factory=dict)
    max_id: int = 0
    _canonical_cache: dict[str, str] = field(default_factory=dict)

    def apply(self, record: LogRecord) -> None:
        """Apply one log record (used both when replaying and after a successful write)."""
        if isinstance(record, SchemaRecord):
            self._apply_schema(record)
        elif isinstance(record, ConfigRecord):
            if record.level is None:
                self.configs.pop(record.subject, None)
            else:
                self.configs[record.subject] = record.level
        else:
            self.max_id = max(self.max_id, record.max_id)

    def _canonical(self, text: str) -> str:
        cached = self._canonical_cache.get(text)
        if cached is None:
            try:
                cached = parse_schema(text, validate_defaults=False).canonical
            except InvalidSchemaError as exc:
                # Keep serving the rest of the log; this id can still be fetched, only matching by
                # content is impossible.
                log.error("stored_schema_unparseable", error=str(exc))
                cached = text
            self._canonical_cache[text] = cached
        return cached

    def _apply_schema(self, record: SchemaRecord) -> None:
        subject_versions = self.versions.setdefault(record.subject, {})
        previous = subject_versions.pop(record.version, None)
        if previous is not None:
            self._drop_ref(previous)
        if record.tombstone or record.schema_id is None or record.schema is None:
            if not subject_versions:
                del self.versions[record.subject]
            return
        schema_id = record.schema_id
        schema = self.id_schema.setdefault(schema_id, record.schema)
        if schema != record.schema and self._canonical(schema) != self._canonical(record.schema):
            log.error("schema_id_conflict", schema_id=schema_id, subject=record.subject)
        subject_versions[record.version] = VersionInfo(
            record.subject, record.version, schema_id, schema, record.deleted
        )
        self.id_refs.setdefault(schema_id, set()).add((record.subject, record.version))
        canonical = self._canonical(schema)
        self.id_canonical[schema_id] = canonical
        self.canonical_ids.setdefault(canonical, schema_id)
        self.max_id = max(self.max_id, schema_id)

    def _drop_ref(self, info: VersionInfo) -> None:
        refs = self.id_refs.get(info.schema_id)
        if refs is None:
            return
        refs.discard((info.subject, info.version))
        if not refs:
            # No version uses this id any more (hard deleted everywhere): forget the schema. The id
            # itself is never reused because ``max_id`` only grows.
            del self.id_refs[info.schema_id]
            self.id_schema.pop(info.schema_id, None)
            canonical = self.id_canonical.pop(info.schema_id, None)
            if canonical is not None and self.canonical_ids.get(canonical) == info.schema_id:
                del self.canonical_ids[canonical]


@dataclass(frozen=True)
class RegistryCounts:
    """Sizes exposed as metrics."""

    subjects: int
    versions: int
    schemas: int


class SchemaRegistry:
    """The registry's operations. Thread-safe; writes are serialised (see the module docstring)."""

    def __init__(self, schema_log: SchemaLog, default_compatibility: CompatibilityLevel) -> None:
        self._log = schema_log
        self._default_compatibility = default_compatibility
        self._state = _State()
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._parsed: dict[int, ParsedSchema] = {}
        self._stale = False
        self._loaded = False

    # -- loading -----------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True once the log has been replayed at least once (reads can be served)."""
        return self._loaded

    @property
    def in_sync(self) -> bool:
        """False after a failed write until memory has been rebuilt from the log."""
        return self._loaded and not self._stale

    def load(self) -> int:
        """Replay the whole log into a fresh state and switch to it; return the record count.

        Raises:
            StorageError: the log could not be read (the previous state stays in place).
        """
        with self._write_lock:
            return self._reload()

    def _reload(self) -> int:
        state = _State()
        count = self._log.replay(state.apply)
        with self._state_lock:
            self._state = state
            self._parsed = {}
            self._stale = False
            self._loaded = True
        log.info(
            "schemas_log_loaded",
            records=count,
            subjects=len(state.versions),
            schemas=len(state.id_schema),
            max_id=state.max_id,
        )
        return count

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Serialise a change and make sure it decides on a state that matches the log."""
        with self._write_lock:
            if self._stale:
                try:
                    self._reload()
                except StorageError as exc:
                    raise RegistryError.storage(str(exc)) from exc
            yield

    def _append(self, records: list[LogRecord]) -> None:
        """Write records to the log, then to memory. Caller is inside ``_writing()``."""
        try:
            self._log.append(records)
        except StorageError as exc:
            self._stale = True
            log.error("schemas_log_write_failed", error=str(exc))
            try:
                self._reload()
            except StorageError as reload_exc:
                log.error("schemas_log_resync_failed", error=str(reload_exc))
            raise RegistryError.storage(str(exc)) from exc
        with self._state_lock:
            for record in records:
                self._state.apply(record)

    # -- helpers -----------------------------------------------------------------------------------

    def _effective_level(self, subject: str) -> CompatibilityLevel:
        configs = self._state.configs
        return configs.get(subject) or configs.get(None) or self._default_compatibility

    def _live_versions(self, subject: str) -> list[VersionInfo]:
        return sorted(
            (info for info in self._state.versions.get(subject, {}).values() if not info.deleted),
            key=lambda info: info.version,
        )

    def _parsed_by_id(self, schema_id: int, text: str) -> ParsedSchema:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            try:
                parsed = parse_schema(text, validate_defaults=False)
            except InvalidSchemaError as exc:
                raise RegistryError.storage(f"stored schema {schema_id} cannot be parsed: {exc}") from exc
            self._parsed[schema_id] = parsed
        return parsed

    @staticmethod
    def _parse_candidate(text: str) -> ParsedSchema:
        try:
            return parse_schema(text)
        except InvalidSchemaError as exc:
            raise RegistryError.invalid_schema(str(exc)) from None

    def _resolve(self, subject: str, version: VersionSpec, include_deleted: bool) -> VersionInfo:
        versions = self._state.versions.get(subject, {})
        visible = [info for info in versions.values() if include_deleted or not info.deleted]
        if not visible:
            raise RegistryError.subject_not_found(subject)
        if version == LATEST:
            return max(visible, key=lambda info: info.version)
        info = versions.get(version)
        if info is None or (info.deleted and not include_deleted):
            raise RegistryError.version_not_found(subject, version)
        return info

    # -- reads -------------------------------------------------------------------------------------

    def counts(self) -> RegistryCounts:
        """Live subjects, live versions and distinct schema ids."""
        with self._state_lock:
            live = [info for versions in self._state.versions.values() for info in versions.values()]
            live = [info for info in live if not info.deleted]
            return RegistryCounts(
                subjects=len({info.subject for info in live}),
                versions=len(live),
                schemas=len(self._state.id_schema),
            )

    def subjects(
        self, *, include_deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        """Subject names, sorted; by default only those with at least one live version."""
        with self._state_lock:
            names = []
            for subject, versions in self._state.versions.items():
                if not subject.startswith(prefix):
                    continue
                has_live = any(not info.deleted for info in versions.values())
                has_deleted = any(info.deleted for info in versions.values())
                if deleted_only:
                    if has_deleted:
                        names.append(subject)
                elif has_live or include_deleted:
                    names.append(subject)
            return sorted(names)

    def versions(
        self, subject: str, *, include_deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        """Version numbers of a subject, ascending (40401 if it has none visible)."""
        with self._state_lock:
            versions = list(self._state.versions.get(subject, {}).values())
        if deleted_only:
            if not versions:
                raise RegistryError.subject_not_found(subject)
            return sorted(info.version for info in versions if info.deleted)
        chosen = sorted(info.version for info in versions if include_deleted or not info.deleted)
        if not chosen:
            raise RegistryError.subject_not_found(subject)
        return chosen

    def get_version(
        self, subject: str, version: VersionSpec, *, include_deleted: bool = False
    ) -> VersionInfo:
        """One version (``latest`` = highest visible); 40401 / 40402 when absent."""
        with self._state_lock:
            return self._resolve(subject, version, include_deleted)

    def schema_by_id(self, schema_id: int) -> str:
        """Schema text of a global id (soft-deleted versions keep their id readable)."""
        with self._state_lock:
            schema = self._state.id_schema.get(schema_id)
        if schema is None:
            raise RegistryError.schema_not_found(schema_id)
        return schema

    def versions_of_id(self, schema_id: int, *, include_deleted: bool = False) -> list[tuple[str, int]]:
        """``(subject, version)`` pairs that use a global id, sorted."""
        with self._state_lock:
            refs = self._state.id_refs.get(schema_id)
            if refs is None:
                raise RegistryError.schema_not_found(schema_id)
            versions = self._state.versions
            return sorted(
                (subject, version)
                for subject, version in refs
                if include_deleted or not versions[subject][version].deleted
            )

    def lookup(self, subject: str, schema_text: str, *, include_deleted: bool = False) -> VersionInfo:
        """Find the version of ``subject`` holding this schema (compared by canonical form)."""
        candidate = self._parse_candidate(schema_text)
        with self._state_lock:
            versions = self._state.versions.get(subject, {})
            visible = [info for info in versions.values() if include_deleted or not info.deleted]
            if not visible:
                raise RegistryError.subject_not_found(subject)
            schema_id = self._state.canonical_ids.get(candidate.canonical)
            matches = [info for info in visible if info.schema_id == schema_id]
        if not matches:
            raise RegistryError.schema_not_found()
        # Prefer a live version, then the newest.
        return max(matches, key=lambda info: (not info.deleted, info.version))

    # -- compatibility -----------------------------------------------------------------------------

    def test_compatibility(
        self, subject: str, schema_text: str, version: VersionSpec | None = None
    ) -> CompatibilityResult:
        """Check a candidate against one version, or (``version`` None) as a registration would."""
        candidate = self._parse_candidate(schema_text)
        with self._state_lock:
            level = self._effective_level(subject)
            live = self._live_versions(subject)
            if version is None:
                targets = live
            elif version == LATEST:
                targets = live[-1:]
            else:
                if not self._state.versions.get(subject):
                    raise RegistryError.subject_not_found(subject)
                targets = [self._resolve(subject, version, include_deleted=False)]
            previous = [(info.version, self._parsed_by_id(info.schema_id, info.schema)) for info in targets]
        return check_compatibility(candidate, previous, level)

    # -- writes ------------------------------------------------------------------------------------

    def register(self, subject: str, schema_text: str) -> VersionInfo:
        """Register a schema under a subject, or return the existing version holding it.

        The same schema (by canonical form) keeps one global id across subjects. A new version is
        only created when the subject's compatibility level allows it (409 otherwise).
        """
        candidate = self._parse_candidate(schema_text)
        with self._writing():
            with self._state_lock:
                existing_id = self._state.canonical_ids.get(candidate.canonical)
                live = self._live_versions(subject)
                for info in reversed(live):
                    if info.schema_id == existing_id:
                        return info
                level = self._effective_level(subject)
                previous = [(info.version, self._parsed_by_id(info.schema_id, info.schema)) for info in live]
                all_versions = self._state.versions.get(subject, {})
                next_version = max(all_versions, default=0) + 1
                if existing_id is not None:
                    schema_id, schema = existing_id, self._state.id_schema[existing_id]
                else:
                    schema_id, schema = self._state.max_id + 1, candidate.canonical
            result = check_compatibility(candidate, previous, level)
            if not result.is_compatible:
                log.info(
                    "schema_rejected_incompatible",
                    subject=subject,
                    level=level.value,
                    against_version=result.failed_version,
                )
                raise RegistryError.incompatible(subject, result.messages())
            record = SchemaRecord(subject, next_version, schema_id, schema, deleted=False)
            self._append([record])
            self._parsed.setdefault(schema_id, candidate)
        log.info("schema_registered", subject=subject, version=next_version, schema_id=schema_id)
        return VersionInfo(subject, next_version, schema_id, schema)

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft delete every live version, or (``permanent``) remove an already soft-deleted subject."""
        with self._writing():
            with self._state_lock:
                versions = sorted(self._state.versions.get(subject, {}).values(), key=lambda i: i.version)
                has_config = subject in self._state.configs
                max_id = self._state.max_id
            if not versions:
                raise RegistryError.subject_not_found(subject)
            records: list[LogRecord]
            if permanent:
                if any(not info.deleted for info in versions):
                    raise RegistryError.subject_not_soft_deleted(subject)
                records = [IdWatermarkRecord(max_id)]
                records += [SchemaRecord(subject, info.version) for info in versions]
                if has_config:
                    records.append(ConfigRecord(subject, None))
                deleted = [info.version for info in versions]
            else:
                live = [info for info in versions if not info.deleted]
                if not live:
                    raise RegistryError.subject_soft_deleted(subject)
                records = [
                    SchemaRecord(subject, info.version, info.schema_id, info.schema, deleted=True)
                    for info in live
                ]
                deleted = [info.version for info in live]
            self._append(records)
        log.info("subject_deleted", subject=subject, versions=deleted, permanent=permanent)
        return deleted

    def delete_version(self, subject: str, version: VersionSpec, *, permanent: bool = False) -> int:
        """Soft delete one version, or (``permanent``) remove an already soft-deleted one."""
        with self._writing():
            with self._state_lock:
                # "latest" means the latest live version for a soft delete and the latest of all
                # versions for a hard delete (which only applies to soft-deleted ones). A numbered
                # version is looked up among all so that deleting it twice answers 40406.
                if version == LATEST and not permanent:
                    info = self._resolve(subject, LATEST, include_deleted=False)
                else:
                    info = self._resolve(subject, version, include_deleted=True)
                max_id = self._state.max_id
            records: list[LogRecord]
            if permanent:
                if not info.deleted:
                    raise RegistryError.version_not_soft_deleted(subject, info.version)
                records = [IdWatermarkRecord(max_id), SchemaRecord(subject, info.version)]
            else:
                if info.deleted:
                    raise RegistryError.version_soft_deleted(subject, info.version)
                records = [SchemaRecord(subject, info.version, info.schema_id, info.schema, deleted=True)]
            self._append(records)
        log.info("version_deleted", subject=subject, version=info.version, permanent=permanent)
        return info.version

    # -- configuration -----------------------------------------------------------------------------

    def global_compatibility(self) -> CompatibilityLevel:
        """The global level (the configured default until someone sets it)."""
        with self._state_lock:
            return self._state.configs.get(None) or self._default_compatibility

    def subject_compatibility(self, subject: str, *, default_to_global: bool = False) -> CompatibilityLevel:
        """The subject-level setting; 40408 if unset unless ``default_to_global``."""
        with self._state_lock:
            level = self._state.configs.get(subject)
            if level is not None:
                return level
            if default_to_global:
                return self._state.configs.get(None) or self._default_compatibility
        raise RegistryError.subject_compatibility_not_configured(subject)

    def set_compatibility(self, subject: str | None, level: CompatibilityLevel) -> CompatibilityLevel:
        """Set the global (``subject`` None) or a subject's level."""
        with self._writing():
            with self._state_lock:
                unchanged = self._state.configs.get(subject) == level
            if not unchanged:
                self._append([ConfigRecord(subject, level)])
        log.info("compatibility_set", subject=subject, level=level.value)
        return level

    def delete_compatibility(self, subject: str | None) -> CompatibilityLevel:
        """Remove a setting and return the level that was in force before."""
        with self._writing():
            with self._state_lock:
                current = self._state.configs.get(subject)
                known_subject = subject is None or subject in self._state.versions
                fallback = self._state.configs.get(None) or self._default_compatibility
            if subject is None:
                if current is not None:
                    self._append([ConfigRecord(None, None)])
                return current or fallback
            if current is None:
                if not known_subject:
                    raise RegistryError.subject_not_found(subject)
                raise RegistryError.subject_compatibility_not_configured(subject)
            self._append([ConfigRecord(subject, None)])
        log.info("compatibility_deleted", subject=subject)
        return current

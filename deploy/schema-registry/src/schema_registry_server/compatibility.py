"""Avro schema parsing, canonical identity and compatibility rules.

This module is pure (no I/O, no server state) so the rules can be unit tested on their own.

Verdicts come from Apache Avro's own ``ReaderWriterCompatibilityChecker``. The Python port of that
checker loses two things the Java one keeps, and both matter for readable error messages:

* it restarts the location path when it descends into a union branch, so an incompatibility inside an
  optional nested record is reported at a path relative to that record instead of the root;
* it merges incompatibilities into *sets* of messages and locations, so the pairing of "what is
  wrong" with "where" is lost as soon as there is more than one problem.

``_TracingChecker`` fixes the first by continuing the enclosing path (exactly what the Java checker
does) and records every leaf incompatibility as it is created, together with the human field path
(``Payment.customer.email``). Only the bookkeeping is ours; every compatible/incompatible decision is
still made by the Avro library.
"""

from __future__ import annotations

import contextvars
import functools
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import avro.compatibility as avro_compat
import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriter,
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

# Java Avro (and therefore Confluent) silently ignores unknown or invalid logical types and treats the
# value as its underlying type; the Python parser does the same but also warns on every parse.
warnings.filterwarnings("ignore", category=avro.errors.IgnoredLogicalType)

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)

# Key order used when rendering the canonical form: the usual reading order of an Avro schema (and of a
# record field). Keys not listed (custom properties) follow in alphabetical order.
_SCHEMA_KEYS = (
    "type",
    "name",
    "namespace",
    "doc",
    "aliases",
    "fields",
    "symbols",
    "items",
    "values",
    "size",
    "logicalType",
    "precision",
    "scale",
    "default",
)
_FIELD_KEYS = ("name", "type", "doc", "default", "order", "aliases")


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema (or uses something this registry does not support)."""


class CompatibilityLevel(StrEnum):
    """Confluent compatibility levels."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: object) -> CompatibilityLevel:
        """Parse a level name case-insensitively; raise ``ValueError`` for anything else."""
        if not isinstance(value, str):
            raise ValueError(f"compatibility level must be a string, got {value!r}")
        try:
            return cls(value.strip().upper())
        except ValueError:
            allowed = ", ".join(level.value for level in cls)
            raise ValueError(f"Invalid compatibility level {value!r}; allowed: {allowed}") from None

    @property
    def transitive(self) -> bool:
        """Whether every earlier version is checked, not only the latest one."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def new_reads_old(self) -> bool:
        """BACKWARD family: consumers on the new schema must read data written with old ones."""
        return self in (
            CompatibilityLevel.BACKWARD,
            CompatibilityLevel.BACKWARD_TRANSITIVE,
            CompatibilityLevel.FULL,
            CompatibilityLevel.FULL_TRANSITIVE,
        )

    @property
    def old_reads_new(self) -> bool:
        """FORWARD family: consumers on old schemas must read data written with the new one."""
        return self in (
            CompatibilityLevel.FORWARD,
            CompatibilityLevel.FORWARD_TRANSITIVE,
            CompatibilityLevel.FULL,
            CompatibilityLevel.FULL_TRANSITIVE,
        )


@dataclass(frozen=True)
class ParsedSchema:
    """An Avro schema parsed by the Avro library plus its canonical text.

    ``canonical`` is both the identity of the schema (two texts that differ only in whitespace, key
    order or implicit namespaces produce the same string) and the form the registry stores and serves.
    Unlike Avro's *Parsing Canonical Form* it keeps docs, defaults, aliases, logical types and custom
    properties, because those change meaning (defaults decide compatibility) and users expect to get
    them back.
    """

    schema: avro.schema.Schema = field(compare=False, repr=False)
    canonical: str


def _ordered(value: Any, key_order: tuple[str, ...] = _SCHEMA_KEYS) -> Any:
    """Rebuild a schema's JSON with a deterministic key order (lists keep their order)."""
    if isinstance(value, list):
        return [_ordered(item, key_order) for item in value]
    if not isinstance(value, dict):
        return value
    rank = {key: index for index, key in enumerate(key_order)}
    ordered: dict[str, Any] = {}
    for key in sorted(value, key=lambda item: (rank.get(item, len(rank)), item)):
        item = value[key]
        if key == "fields" and isinstance(item, list):
            ordered[key] = [_ordered(entry, _FIELD_KEYS) for entry in item]
        elif key == "default":
            ordered[key] = _sorted_data(item)  # data, not schema
        else:
            ordered[key] = _ordered(item)
    return ordered


def _sorted_data(value: Any) -> Any:
    """JSON data with object keys sorted, so equal defaults render identically."""
    if isinstance(value, dict):
        return {key: _sorted_data(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_data(item) for item in value]
    return value


def parse_schema(text: str, *, validate_defaults: bool = True) -> ParsedSchema:
    """Parse Avro schema text and compute its canonical form.

    ``validate_defaults`` applies the extra checks the Java parser performs on new schemas (field
    defaults must match their type, unions must not be empty, enum symbols must be a list). It is off
    when re-reading schemas that were already accepted, so a stricter rule can never make a stored
    schema unreadable.

    Raises:
        InvalidSchemaError: with a message meant for the API user.
    """
    try:
        document = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidSchemaError(f"Invalid schema: not valid JSON ({exc})") from None
    try:
        parsed = avro.schema.make_avsc_object(document)
    except (avro.errors.AvroException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidSchemaError(f"Invalid schema: {exc}") from None
    except RecursionError:
        raise InvalidSchemaError("Invalid schema: nested too deeply") from None
    if validate_defaults:
        _validate_schema(parsed)
    try:
        canonical = json.dumps(
            _ordered(parsed.to_json()), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:  # NaN/Infinity defaults: not representable in standard JSON
        raise InvalidSchemaError(f"Invalid schema: {exc}") from None
    return ParsedSchema(schema=parsed, canonical=canonical)


def canonical_form(text: str) -> str:
    """Return the canonical text of an Avro schema (see ``ParsedSchema``)."""
    return parse_schema(text, validate_defaults=False).canonical


# --------------------------------------------------------------------------------------------------
# Validation the Python parser does not do but Java Avro (hence Confluent) does for new schemas.
# --------------------------------------------------------------------------------------------------


def _children(schema: avro.schema.Schema) -> Iterator[avro.schema.Schema]:
    if isinstance(schema, avro.schema.RecordSchema):
        for item in schema.fields:
            yield item.type
    elif isinstance(schema, avro.schema.ArraySchema):
        yield schema.items
    elif isinstance(schema, avro.schema.MapSchema):
        yield schema.values
    elif isinstance(schema, avro.schema.UnionSchema):
        yield from schema.schemas


def _validate_schema(root: avro.schema.Schema) -> None:
    seen: set[str] = set()
    pending = [root]
    while pending:
        schema = pending.pop()
        if isinstance(schema, avro.schema.NamedSchema):
            # Named types are parsed once and referenced by name afterwards; visiting each once also
            # keeps recursive types (linked lists, trees) from looping.
            if schema.fullname in seen:
                continue
            seen.add(schema.fullname)
        if isinstance(schema, avro.schema.UnionSchema) and not schema.schemas:
            raise InvalidSchemaError("Invalid schema: a union must contain at least one type")
        if isinstance(schema, avro.schema.EnumSchema):
            symbols = schema.get_prop("symbols")
            if not isinstance(symbols, list) or not all(isinstance(symbol, str) for symbol in symbols):
                raise InvalidSchemaError(
                    f"Invalid schema: enum {schema.fullname} symbols must be a list of strings"
                )
        if isinstance(schema, avro.schema.RecordSchema):
            for item in schema.fields:
                if item.has_default and not _default_matches(item.type, item.default):
                    raise InvalidSchemaError(_invalid_default_message(schema, item))
        pending.extend(_children(schema))


def _invalid_default_message(record: avro.schema.RecordSchema, item: avro.schema.Field) -> str:
    rendered = json.dumps(item.default)
    where = f"{record.fullname}.{item.name}"
    message = f"Invalid default for field '{where}': {rendered} is not a valid {_type_label(item.type)}"
    if isinstance(item.type, avro.schema.UnionSchema) and item.type.schemas:
        # Avro spec: the default of a union field is encoded with the union's *first* type, which is
        # why optional fields are written ["null", ...] with "default": null.
        first = _type_label(item.type.schemas[0])
        message += f" (a union default must match the union's first type, {first})"
    return message


def _type_label(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.fullname}"
    if isinstance(schema, avro.schema.UnionSchema):
        return "union [" + ", ".join(_type_label(branch) for branch in schema.schemas) + "]"
    return str(schema.type)


def _default_matches(schema: avro.schema.Schema, value: object) -> bool:
    """Whether a JSON default value is valid for ``schema`` (Avro spec, JSON encoding of defaults)."""
    kind = schema.type
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("string", "bytes", "fixed"):
        # bytes and fixed defaults are JSON strings whose code points are the byte values.
        return isinstance(value, str)
    if isinstance(schema, avro.schema.EnumSchema):
        return isinstance(value, str) and value in schema.symbols
    if isinstance(schema, avro.schema.ArraySchema):
        return isinstance(value, list) and all(_default_matches(schema.items, item) for item in value)
    if isinstance(schema, avro.schema.MapSchema):
        return isinstance(value, dict) and all(
            _default_matches(schema.values, item) for item in value.values()
        )
    if isinstance(schema, avro.schema.RecordSchema):
        if not isinstance(value, dict):
            return False
        for item in schema.fields:
            if item.name in value:
                if not _default_matches(item.type, value[item.name]):
                    return False
            elif not item.has_default:
                return False
        return True
    if isinstance(schema, avro.schema.UnionSchema):
        return bool(schema.schemas) and _default_matches(schema.schemas[0], value)
    return False


# --------------------------------------------------------------------------------------------------
# Reader/writer checks on top of Avro's checker.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incompatibility:
    """One reason why a reader schema cannot read data written with a writer schema."""

    kind: str
    """Avro incompatibility type in Confluent's spelling, e.g. ``TYPE_MISMATCH``."""
    location: str
    """Path in the reader schema, e.g. ``/fields/2/type`` (same convention as Confluent)."""
    field_path: str
    """Human path of the field concerned, e.g. ``Payment.customer.email``."""
    detail: str
    """Avro's own message, e.g. ``reader type: string not compatible with writer type: int``."""
    reader_role: str = "new"
    """Which side is the reader: ``new`` (BACKWARD check) or ``old`` (FORWARD check)."""

    @property
    def writer_role(self) -> str:
        """The other side of the check."""
        return "old" if self.reader_role == "new" else "new"

    def describe(self) -> str:
        """Render in Confluent's ``{errorType:..., description:..., additionalInfo:...}`` style."""
        reader, writer, where = self.reader_role, self.writer_role, self.location
        field_name = self.field_path
        descriptions = {
            "NAME_MISMATCH": f"The name of the schema '{field_name}' has changed (path '{where}')",
            "FIXED_SIZE_MISMATCH": (
                f"The size of FIXED type field '{field_name}' at path '{where}' in the {reader} schema "
                f"does not match with the {writer} schema"
            ),
            "MISSING_ENUM_SYMBOLS": (
                f"The {reader} schema is missing enum symbols '{self.detail}' of '{field_name}' "
                f"at path '{where}' in the {writer} schema"
            ),
            "READER_FIELD_MISSING_DEFAULT_VALUE": (
                f"The field '{field_name}' at path '{where}' in the {reader} schema has no default value "
                f"and is missing in the {writer} schema"
            ),
            "TYPE_MISMATCH": (
                f"The type of field '{field_name}' (path '{where}') in the {reader} schema does not match "
                f"with the {writer} schema"
            ),
            "MISSING_UNION_BRANCH": (
                f"The {reader} schema is missing a type inside the union of field '{field_name}' "
                f"at path '{where}' in the {writer} schema"
            ),
        }
        description = descriptions.get(
            self.kind, f"Incompatibility at '{field_name}' (path '{where}') between {reader} and {writer}"
        )
        return f"{{errorType:'{self.kind}', description:'{description}', additionalInfo:'{self.detail}'}}"


@dataclass(frozen=True)
class _Frame:
    reader: avro.schema.Schema
    writer: avro.schema.Schema
    location: list[str]
    field_path: str


@dataclass(frozen=True)
class _Leaf:
    kind: SchemaIncompatibilityType
    message: str
    location: str
    field_path: str


_ACTIVE_CHECKER: contextvars.ContextVar[_TracingChecker | None] = contextvars.ContextVar(
    "schema_registry_active_checker", default=None
)
_LeafFactory = Callable[[SchemaIncompatibilityType, str, list[str]], SchemaCompatibilityResult]


def _location_text(location: list[str]) -> str:
    # Same rendering as avro.compatibility.incompatible(): the first token is the root "/".
    text = "/".join(location)
    return text[1:] if len(location) > 1 else text


def _schema_label(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.NamedSchema):
        return str(schema.fullname)
    return str(schema.type)


class _TracingChecker(ReaderWriterCompatibilityChecker):
    """Avro's checker with Java-like location paths and a record of each leaf incompatibility."""

    def __init__(self) -> None:
        super().__init__()
        self._frames: list[_Frame] = []
        self.leaves: list[_Leaf] = []

    def get_compatibility(
        self,
        reader: avro.schema.Schema,
        writer: avro.schema.Schema,
        reference_token: str = ReaderWriterCompatibilityChecker.ROOT_REFERENCE_TOKEN,
        location: list[str] | None = None,
    ) -> SchemaCompatibilityResult:
        """Same contract and memoisation as the parent, with the location kept across unions."""
        parent = self._frames[-1] if self._frames else None
        if location is None and parent is not None:
            # Avro's Python checker calls us without a location for union branches. Continue the
            # enclosing path like the Java checker: it adds the writer branch index when both sides
            # are unions and nothing otherwise.
            path = list(parent.location)
            both_unions = isinstance(parent.reader, avro.schema.UnionSchema) and isinstance(
                parent.writer, avro.schema.UnionSchema
            )
            if both_unions and reader is parent.reader:
                writer_union = cast(avro.schema.UnionSchema, parent.writer)
                index = next(i for i, branch in enumerate(writer_union.schemas) if branch is writer)
                path.append(str(index))
            field_path = parent.field_path
        else:
            path = [*(location or []), reference_token]
            field_path = self._field_path(parent, reader, path)

        pair = ReaderWriter(reader, writer)
        memoized: SchemaCompatibilityResult | None = self.memoize_map.get(pair)
        if memoized is not None:
            if memoized.compatibility is SchemaCompatibilityType.recursion_in_progress:
                # Recursive types: assume compatible while the outer check of this pair is running.
                return avro_compat.CompatibleResult
            return memoized
        self.memoize_map[pair] = SchemaCompatibilityResult()
        self._frames.append(_Frame(reader, writer, path, field_path))
        try:
            result: SchemaCompatibilityResult = self.calculate_compatibility(reader, writer, path)
        finally:
            self._frames.pop()
        self.memoize_map[pair] = result
        return result

    @staticmethod
    def _field_path(parent: _Frame | None, reader: avro.schema.Schema, path: list[str]) -> str:
        if parent is None:
            return _schema_label(reader)
        if (
            len(path) >= 3
            and path[-3] == "fields"
            and path[-1] == "type"
            and isinstance(parent.reader, avro.schema.RecordSchema)
        ):
            return f"{parent.field_path}.{parent.reader.fields[int(path[-2])].name}"
        if path[-1] == "items":
            return f"{parent.field_path}[]"
        if path[-1] == "values":
            return f"{parent.field_path}{{}}"
        return parent.field_path

    def record_leaf(self, kind: SchemaIncompatibilityType, message: str, location: list[str]) -> None:
        """Called for every incompatibility Avro creates while this checker is active."""
        frame = self._frames[-1] if self._frames else None
        field_path = frame.field_path if frame is not None else ""
        if (
            frame is not None
            and len(location) >= 2
            and location[-2] == "fields"
            and isinstance(frame.reader, avro.schema.RecordSchema)
        ):
            field_path = f"{field_path}.{frame.reader.fields[int(location[-1])].name}"
        self.leaves.append(_Leaf(kind, message, _location_text(location), field_path))


def _install_leaf_hook() -> bool:
    """Wrap ``avro.compatibility.incompatible`` so the active checker sees each leaf.

    The wrapper returns exactly what the original returns; it only notifies the checker bound to the
    current context (a ContextVar, so concurrent checks in other threads are not mixed up). If a future
    Avro release renames the function, messages fall back to Avro's merged sets.
    """
    original: _LeafFactory | None = getattr(avro_compat, "incompatible", None)
    if original is None:
        return False
    if getattr(original, "_schema_registry_hook", False):
        return True

    @functools.wraps(original)
    def incompatible(
        incompat_type: SchemaIncompatibilityType, message: str, location: list[str]
    ) -> SchemaCompatibilityResult:
        result = original(incompat_type, message, location)
        checker = _ACTIVE_CHECKER.get()
        if checker is not None:
            checker.record_leaf(incompat_type, message, location)
        return result

    incompatible._schema_registry_hook = True  # type: ignore[attr-defined]
    setattr(avro_compat, "incompatible", incompatible)  # noqa: B010 - module attribute, not an object
    return True


_LEAF_HOOK_INSTALLED = _install_leaf_hook()


def reader_writer_incompatibilities(
    reader: ParsedSchema, writer: ParsedSchema, *, reader_role: str = "new"
) -> list[Incompatibility]:
    """Every reason why ``reader`` cannot read data written with ``writer`` (empty = compatible)."""
    checker = _TracingChecker()
    token = _ACTIVE_CHECKER.set(checker)
    try:
        result = checker.get_compatibility(reader.schema, writer.schema)
    finally:
        _ACTIVE_CHECKER.reset(token)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []

    found: list[Incompatibility] = []
    seen: set[tuple[str, str, str]] = set()
    for leaf in checker.leaves:
        # Leaves from union branches that were tried and then matched by another branch are not part
        # of the final verdict; Avro's merged result only carries the ones that are.
        if leaf.message not in result.messages or leaf.location not in result.locations:
            continue
        identity = (leaf.kind.name, leaf.location, leaf.message)
        if identity in seen:
            continue
        seen.add(identity)
        found.append(
            Incompatibility(
                kind=leaf.kind.name.upper(),
                location=leaf.location,
                field_path=leaf.field_path,
                detail=leaf.message,
                reader_role=reader_role,
            )
        )
    if not found:
        # Hook unavailable (or an Avro change we do not know about): keep the verdict and report
        # Avro's merged view rather than nothing.
        locations = ", ".join(sorted(loc for loc in result.locations if loc != "/")) or "/"
        kinds = sorted({kind.name.upper() for kind in result.incompatibilities})
        for kind in kinds or ["INCOMPATIBLE"]:
            found.append(
                Incompatibility(
                    kind=kind,
                    location=locations,
                    field_path=_schema_label(reader.schema),
                    detail="; ".join(sorted(result.messages)),
                    reader_role=reader_role,
                )
            )
    return found


@dataclass(frozen=True)
class CompatibilityResult:
    """Outcome of checking a candidate schema against a subject's earlier versions."""

    level: CompatibilityLevel
    incompatibilities: tuple[Incompatibility, ...] = ()
    failed_version: int | None = None
    """The earlier version that rejected the candidate (the newest failing one)."""
    failed_schema: str | None = None

    @property
    def is_compatible(self) -> bool:
        """True when no incompatibility was found."""
        return not self.incompatibilities

    def messages(self) -> list[str]:
        """Human-readable details in Confluent's format (empty when compatible)."""
        if self.is_compatible:
            return []
        details = [item.describe() for item in self.incompatibilities]
        details.append(f"{{oldSchemaVersion: {self.failed_version}}}")
        details.append(f"{{oldSchema: '{self.failed_schema}'}}")
        details.append(f"{{compatibility: '{self.level.value}'}}")
        return details


def check_compatibility(
    candidate: ParsedSchema,
    previous: Sequence[tuple[int, ParsedSchema]],
    level: CompatibilityLevel,
) -> CompatibilityResult:
    """Check ``candidate`` against earlier versions under ``level``.

    Args:
        candidate: the schema being registered or tested.
        previous: ``(version, schema)`` pairs of the non-deleted earlier versions, oldest first.
        level: the subject's effective compatibility level.

    Non-transitive levels compare with the latest version only; transitive ones with all of them,
    newest first, stopping at the first version that fails (as Confluent does).
    """
    if level is CompatibilityLevel.NONE or not previous:
        return CompatibilityResult(level)
    ordered = sorted(previous, key=lambda item: item[0], reverse=True)
    targets = ordered if level.transitive else ordered[:1]
    for version, existing in targets:
        problems: list[Incompatibility] = []
        if level.new_reads_old:
            problems += reader_writer_incompatibilities(candidate, existing, reader_role="new")
        if level.old_reads_new:
            problems += reader_writer_incompatibilities(existing, candidate, reader_role="old")
        if problems:
            return CompatibilityResult(level, tuple(problems), version, existing.canonical)
    return CompatibilityResult(level)

"""API errors with Confluent's error codes and HTTP statuses."""

from __future__ import annotations


class RegistryError(Exception):
    """An error answered as ``{"error_code": code, "message": message}`` with ``http_status``."""

    def __init__(self, http_status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message

    # 404 family -----------------------------------------------------------------------------------

    @classmethod
    def subject_not_found(cls, subject: str) -> RegistryError:
        """40401."""
        return cls(404, 40401, f"Subject '{subject}' not found.")

    @classmethod
    def version_not_found(cls, subject: str, version: int | str) -> RegistryError:
        """40402."""
        return cls(404, 40402, f"Version {version} not found for subject '{subject}'.")

    @classmethod
    def schema_not_found(cls, schema_id: int | None = None) -> RegistryError:
        """40403."""
        if schema_id is None:
            return cls(404, 40403, "Schema not found")
        return cls(404, 40403, f"Schema {schema_id} not found")

    @classmethod
    def subject_soft_deleted(cls, subject: str) -> RegistryError:
        """40404: the subject is already soft deleted."""
        return cls(
            404,
            40404,
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
        )

    @classmethod
    def subject_not_soft_deleted(cls, subject: str) -> RegistryError:
        """40405: a hard delete must follow a soft delete."""
        return cls(
            404,
            40405,
            f"Subject '{subject}' was not deleted first before being permanently deleted",
        )

    @classmethod
    def version_soft_deleted(cls, subject: str, version: int) -> RegistryError:
        """40406: the version is already soft deleted."""
        return cls(
            404,
            40406,
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently",
        )

    @classmethod
    def version_not_soft_deleted(cls, subject: str, version: int) -> RegistryError:
        """40407: a hard delete must follow a soft delete."""
        return cls(
            404,
            40407,
            f"Subject '{subject}' Version {version} was not deleted first before being permanently deleted",
        )

    @classmethod
    def subject_compatibility_not_configured(cls, subject: str) -> RegistryError:
        """40408."""
        return cls(
            404,
            40408,
            f"Subject '{subject}' does not have subject-level compatibility configured",
        )

    # 409 / 422 ------------------------------------------------------------------------------------

    @classmethod
    def incompatible(cls, subject: str, details: list[str]) -> RegistryError:
        """409: the schema breaks the subject's compatibility rule."""
        return cls(
            409,
            409,
            f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
            f"details: [{', '.join(details)}]",
        )

    @classmethod
    def invalid_schema(cls, message: str) -> RegistryError:
        """42201."""
        return cls(422, 42201, message)

    @classmethod
    def invalid_version(cls, version: str) -> RegistryError:
        """42202."""
        return cls(
            422,
            42202,
            f"The specified version '{version}' is not a valid version id. "
            'Allowed values are between [1, 2^31-1] and the string "latest"',
        )

    @classmethod
    def invalid_compatibility_level(cls, value: object) -> RegistryError:
        """42203."""
        return cls(
            422,
            42203,
            f"Invalid compatibility level {value!r}. Valid values are NONE, BACKWARD, "
            "BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL and FULL_TRANSITIVE",
        )

    @classmethod
    def invalid_mode(cls, value: object) -> RegistryError:
        """42204."""
        return cls(422, 42204, f"Invalid mode {value!r}: this registry only supports READWRITE")

    @classmethod
    def operation_not_permitted(cls, message: str) -> RegistryError:
        """42205."""
        return cls(422, 42205, message)

    # 5xx ------------------------------------------------------------------------------------------

    @classmethod
    def storage(cls, message: str) -> RegistryError:
        """50001: the Kafka log could not be read or written."""
        return cls(500, 50001, f"Error in the backend data store: {message}")

    @classmethod
    def not_ready(cls) -> RegistryError:
        """503 while the schemas topic is still being loaded."""
        return cls(503, 50001, "The schema registry is still loading the schemas topic")

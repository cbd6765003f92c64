"""Settings of the alerter, read from ``ALERTER_*`` environment variables.

Channel endpoints are optional: a channel whose endpoint is not configured is
disabled, reported at startup and in ``/ready``, and skipped by the router.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic
from mlops_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTER_", extra="ignore", populate_by_name=True)

    service_name: str = "alerter"
    http_port: int = 8006

    # -- input
    alerts_topic: str = Field(
        Topic.SYSTEM_ALERTS.value,
        description="Topic consumed (and written by /alertmanager and acks); carries system.alerts events.",
    )
    routes_file: Path | None = Field(
        None, description="Routing rules (YAML); defaults to the routes.yaml shipped in the package."
    )
    external_url: str | None = Field(
        None, description="Base URL of this service as people reach it (links in notifications)."
    )

    # -- channels (a channel without its endpoint is disabled)
    webhook_url: str | None = None
    webhook_headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers for the generic webhook (JSON object)."
    )
    slack_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: str | None = Field(None, description="Comma-separated recipients.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool | None = Field(None, description="None: upgrade when the server offers STARTTLS.")
    smtp_ssl: bool = False
    smtp_timeout_s: float = 10.0
    http_timeout_s: float = 5.0
    require_channel: bool = Field(False, description="Not ready while no channel is configured.")

    # -- delivery
    delivery_workers: int = Field(8, ge=1)
    delivery_max_attempts: int = Field(5, ge=1)
    delivery_backoff_base_s: float = Field(1.0, gt=0)
    delivery_backoff_max_s: float = Field(60.0, gt=0)
    delivery_backoff_jitter: float = Field(0.2, ge=0, description="Up to this fraction is added to a delay.")
    max_pending_deliveries: int = Field(10_000, ge=1)
    shutdown_timeout_s: float = Field(15.0, ge=0, description="How long pending deliveries may finish.")

    # -- state
    history_max: int = Field(1000, ge=1, description="Alerts kept in memory (oldest closed ones go first).")
    escalation_interval_s: float = Field(5.0, gt=0, description="How often escalation deadlines are checked.")
    restore_lookback_s: float = Field(
        86_400.0, ge=0, description="On start, alerts of this period are replayed into state (0: none)."
    )
    restore_timeout_s: float = Field(60.0, gt=0)
    journal_enabled: bool = Field(
        True, description="Record deliveries on the journal topic before attempting them (see journal.py)."
    )
    journal_topic: str = Field(
        "alerter-deliveries",
        description="Compacted delivery journal; must start with the catalogue's internal prefix alerter-.",
    )
    journal_retention_s: float = Field(
        86_400.0,
        gt=0,
        description="Finished journal entries are kept (never sent again) this long, then tombstoned.",
    )
    journal_compact_interval_s: float = Field(
        300.0, gt=0, description="How often old entries are tombstoned."
    )
    alertmanager_direct_fallback: bool = Field(
        True, description="Route Alertmanager alerts in-process when Kafka refuses them."
    )

    @property
    def alerts(self) -> Binding:
        """The alerts topic: consumed, and written by ``/alertmanager`` and acknowledgements."""
        return Binding.to(Topic.SYSTEM_ALERTS, self.alerts_topic, key="dedup_key")

    def bindings(self) -> ServiceBindings:
        return ServiceBindings.of(
            consumes=[self.alerts], produces=[self.alerts, self.heartbeats, self.system_metrics]
        )

    @property
    def smtp_recipients(self) -> list[str]:
        return [part.strip() for part in (self.smtp_to or "").split(",") if part.strip()]

    @property
    def base_url(self) -> str:
        return (self.external_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

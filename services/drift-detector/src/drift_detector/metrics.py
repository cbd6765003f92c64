"""Prometheus metrics of the drift detector (``drift_*``), built once per process.

Label cardinality stays small: features are the model's 31 columns, versions are the
few that serve at a time, arms are champion/challenger.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FEATURE_PSI = Gauge("drift_feature_psi", "PSI of a feature in the latest window", ["drift_type", "feature"])
FEATURE_STATE = Gauge(
    "drift_feature_state", "Level of a feature in the latest window (0 stable, 1 watch, 2 drift)", ["feature"]
)
STATE = Gauge("drift_state", "Current drift state (0 stable, 1 watch, 2 drift)", ["drift_type"])
SCORE = Gauge("drift_score", "drift_score of the latest window, in [0, 1]", ["drift_type"])
LABEL_RATE = Gauge(
    "drift_label_rate", "Fraud label rate: latest target window and the serving model's reference", ["kind"]
)
WINDOWS = Counter("drift_windows_processed_total", "Windows evaluated", ["drift_type"])
WINDOW_SIZE = Gauge("drift_window_size", "Predictions per window in force (smaller while monitoring)")
PREDICTIONS = Counter("drift_predictions_total", "prediction.completed events taken into the windows")
EVENTS = Counter("drift_events_published_total", "Events published", ["topic", "severity", "reason"])
# Evidently takes seconds on a 5k-row window; buckets reach two minutes for slow hosts.
REPORT_SECONDS = Histogram(
    "drift_report_generation_seconds",
    "Time to build and write one Evidently report",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120),
)
REPORTS = Counter("drift_reports_total", "Reports by outcome", ["status"])
REFERENCE = Gauge(
    "drift_reference_info", "1 for the model version whose reference is in use", ["model_version"]
)

LABELS = Counter("drift_labels_total", "prediction.feedback events consumed")
LABELLED = Counter(
    "drift_labelled_samples_total", "Predictions joined with their label", ["model_version", "ab_arm"]
)
LABELLED_WINDOW = Gauge(
    "drift_labelled_window_samples",
    "Labelled predictions behind the live metrics",
    ["model_version", "ab_arm"],
)
PENDING = Gauge("drift_pending_predictions", "Predictions waiting for their label")
ORPHANS = Gauge("drift_orphan_labels", "Labels waiting for their prediction")
EXPIRED = Counter("drift_labels_expired_total", "Predictions whose label never came within the TTL")
LIVE_AUC = Gauge("drift_live_auc", "Live ROC AUC", ["model_version", "ab_arm"])
LIVE_RECALL = Gauge(
    "drift_live_recall", "Live recall at the version's threshold", ["model_version", "ab_arm"]
)
LIVE_METRIC = Gauge(
    "drift_live_metric",
    "Live FDS metric (auprc, precision, fpr, business_cost, ...)",
    ["model_version", "ab_arm", "metric"],
)
PERFORMANCE_DROP = Gauge(
    "drift_performance_drop", "Relative drop against the training baseline", ["model_version", "metric"]
)
AB_P_VALUE = Gauge("drift_ab_p_value", "p-value of the latest A/B evaluation", ["champion", "challenger"])
EVALUATIONS = Counter("drift_ab_evaluations_total", "A/B evaluations published", ["winner"])

# -- scale-out (DRIFT_SCALE_OUT): partial counts sent by every instance, merged by one
PARTIALS_SENT = Counter("drift_partials_sent_total", "Partials (bin counts of one transaction) published")
PARTIALS_MERGED = Counter("drift_partials_merged_total", "Partials added up by this instance as the merger")
MERGE_OPEN_ROWS = Gauge("drift_merge_open_rows", "Predictions in merged buckets not complete yet")
MERGE_DROPPED = Counter(
    "drift_merge_dropped_rows_total",
    "Merged rows not judged: binned with another reference than the merger's",
    ["drift_type"],
)
QUALITY_MUTED = Counter(
    "drift_quality_events_muted_total",
    "Quality, target-drift and A/B events not published: another instance owns partition 0",
)

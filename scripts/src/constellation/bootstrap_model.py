"""Train and register the first fraud model and make it ``@champion``.

Idempotent: if the registered model already has a ``@champion``, nothing is trained
and that version is printed. ``--force`` trains a new version anyway and promotes it
(the old champion becomes ``@previous_champion``).

Stdout carries only the champion version (``VERSION=$(python -m constellation bootstrap-model)``);
progress goes to stderr. Exit code 1 if MLflow is unreachable or the new model fails
validation.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request

from fraud_model.generator import TransactionGenerator
from fraud_model.registry import CHALLENGER, CHAMPION, ModelRegistry
from fraud_model.training import DEFAULT_MIN_AUC, DEFAULT_MODEL_NAME, log_and_register, train

log = logging.getLogger("bootstrap_model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m constellation bootstrap-model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
        help="MLflow tracking server (default: $MLFLOW_TRACKING_URI or http://127.0.0.1:5000)",
    )
    parser.add_argument("--model-name", default=os.environ.get("FRAUD_MODEL_NAME", DEFAULT_MODEL_NAME))
    parser.add_argument(
        "--rows", type=int, default=60_000, help="synthetic baseline transactions to train on"
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--fraud-rate", type=float, default=0.02)
    parser.add_argument("--min-auc", type=float, default=DEFAULT_MIN_AUC)
    parser.add_argument("--force", action="store_true", help="retrain and promote even if a champion exists")
    parser.add_argument(
        "--clear-challenger", action="store_true", help="remove the @challenger alias (a fresh A/B start)"
    )
    parser.add_argument(
        "--wait-seconds", type=float, default=60.0, help="how long to wait for the MLflow server to answer"
    )
    return parser.parse_args(argv)


def wait_for_mlflow(uri: str, timeout_s: float) -> bool:
    """Poll ``<uri>/health`` until it answers 200 or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def bootstrap(args: argparse.Namespace) -> str:
    """Ensure a champion exists; return its version."""
    registry = ModelRegistry(args.tracking_uri, args.model_name)
    current = registry.version_for_alias(CHAMPION)
    if args.clear_challenger and registry.version_for_alias(CHALLENGER) is not None:
        registry.delete_alias(CHALLENGER)
        log.info("%s@%s removed", args.model_name, CHALLENGER)
    if current is not None and not args.force:
        log.info("%s@%s already exists (v%s); nothing to do", args.model_name, CHAMPION, current)
        return current

    log.info("generating %d baseline transactions (seed %d)", args.rows, args.seed)
    frame = TransactionGenerator(seed=args.seed, fraud_rate=args.fraud_rate).generate_frame(args.rows)
    result = train(frame, seed=args.seed)
    log.info(
        "trained: val AUC %.4f, AUPRC %.4f, recall %.3f at threshold %.4f",
        result.metrics["auc_roc"],
        result.metrics["auprc"],
        result.metrics["recall"],
        result.threshold,
    )
    info = log_and_register(
        result,
        tracking_uri=args.tracking_uri,
        model_name=args.model_name,
        reason="bootstrap" if current is None else "bootstrap_forced_retrain",
        tags={"training_data": f"synthetic baseline, {args.rows} rows, seed {args.seed}"},
        min_auc=args.min_auc,
    )
    if info.validation_status != "passed":
        raise RuntimeError(
            f"v{info.version} failed validation (AUC {info.metrics['auc_roc']:.4f} < {args.min_auc}); "
            f"{CHAMPION} left unchanged"
        )
    previous, new = registry.promote(info.version)
    log.info("%s@%s -> v%s (previous: %s)", args.model_name, CHAMPION, new, previous or "none")
    return new


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not wait_for_mlflow(args.tracking_uri, args.wait_seconds):
        log.error("MLflow tracking server not reachable at %s", args.tracking_uri)
        return 1
    try:
        # MLflow prints run links to stdout; keep stdout for the version alone.
        with contextlib.redirect_stdout(sys.stderr):
            version = bootstrap(args)
    except Exception as exc:
        log.error("bootstrap failed: %s", exc)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m constellation <command> [options]``: one entry point for every operator command."""

from __future__ import annotations

import importlib
import os
import sys

#: command -> (module whose ``main(argv)`` runs it, one line of help).
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": (
        "constellation.stack",
        "start, stop, scale and inspect the local stack (up, down, status, scale...)",
    ),
    "run": ("constellation.run", "the whole constellation and the live demo, in the foreground (make run)"),
    "demo": ("constellation.demo", "the demo scenario against a running constellation"),
    "scenarios": (
        "constellation.scenarios",
        "incident scenario suite: detection delay, false alarms, actions, recovery (make scenarios)",
    ),
    "bench": ("constellation.bench", "scoring benchmark: pipeline vs naive per-event vs raw Kafka pipe"),
    "soak": (
        "constellation.soak",
        "soak run: mixed traffic with a kill loop; lost/duplicated, memory and lag (make soak)",
    ),
    "bootstrap-model": ("constellation.bootstrap_model", "train and register the first @champion model"),
    "catalogue": ("constellation.catalogue", "write or check the files generated from schemas/services.yaml"),
    "acls": ("constellation.acls", "the Kafka ACLs derived from the service catalogue (show, apply)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python -m constellation <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_module, help_) in COMMANDS.items()]
    lines += ["", "`python -m constellation <command> --help` tells each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's module; imported lazily so each command loads only what it needs."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Operator commands act as the local stack's admin (Kafka) and registry writer, unless
    # the environment names its own credentials (compose, another cluster).
    from constellation.credentials import export_operator_env

    export_operator_env(os.environ)
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

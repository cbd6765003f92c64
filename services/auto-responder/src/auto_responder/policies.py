"""Policies between a rule's action and its execution: quiet hours, dampening, cooldowns.

Pure functions over an explicit :class:`PolicyState` and an explicit ``now``, so tests
drive them with any clock. The order is:

1. **quiet hours** (off by default): retrain and rollback become alerts;
2. **dampening**: when more than ``max_responses`` responses to one event type already
   happened within the window, the action becomes ``monitor``. Monitor itself does not count as a response:
   it is what dampening falls back to, and counting it would keep dampening on forever
   while low-severity events keep arriving;
3. **in progress**: a retrain while another one runs is suppressed;
4. **cooldown** per (event type, action) for the action finally chosen.

A substituted action is recorded as suppressed (reason ``quiet_hours`` / ``dampening``)
next to the decision that replaces it, so the audit log shows both.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from auto_responder.model import EXTERNAL_ACTIONS, Action, ActionRecord, Decision, Status


@dataclass(frozen=True)
class QuietHours:
    """A daily period in a time zone: ``start`` <= hour < ``end`` (wrapping past midnight)."""

    enabled: bool = False
    start: int = 22
    end: int = 6
    timezone: str = "UTC"

    def active(self, now: datetime) -> bool:
        if not self.enabled or self.start == self.end:
            return False
        hour = now.astimezone(ZoneInfo(self.timezone)).hour
        if self.start < self.end:
            return self.start <= hour < self.end
        return hour >= self.start or hour < self.end


QUIET_HOURS_ACTIONS = frozenset({Action.RETRAIN, Action.ROLLBACK})


@dataclass(frozen=True)
class PolicyConfig:
    cooldowns_s: Mapping[str, float] = field(default_factory=dict)
    dampening_max_responses: int = 3
    dampening_window_s: float = 3600.0
    quiet_hours: QuietHours = field(default_factory=QuietHours)

    def cooldown_s(self, action: Action) -> float:
        return float(self.cooldowns_s.get(action.value, 0.0))


@dataclass
class PolicyState:
    """What the policies need to remember: when each (event type, action) last ran,
    and when responses to each event type happened (for dampening)."""

    last_run: dict[tuple[str, str], datetime] = field(default_factory=dict)
    responses: dict[str, deque[datetime]] = field(default_factory=lambda: defaultdict(deque))

    def note_executed(self, policy_key: str, action: str, at: datetime) -> None:
        """An action was decided for execution at ``at`` (whatever its outcome)."""
        previous = self.last_run.get((policy_key, action))
        if previous is None or at > previous:
            self.last_run[(policy_key, action)] = at
        if action not in (Action.MONITOR.value, Action.NONE.value):
            times = self.responses[policy_key]
            times.append(at)
            if len(times) > 1 and times[-2] > at:  # replayed out of order: keep the deque sorted
                self.responses[policy_key] = deque(sorted(times))

    def note_record(self, record: ActionRecord) -> None:
        """Account for one decision record (live or replayed).

        Only the first record of an executed action counts (``started`` for external
        actions, the single terminal record of quick ones); suppressed decisions and
        manual actions do not start cooldowns. A started action holds its cooldown
        whatever its outcome, as in the seed: a failing retrain is not retried at once.
        """
        if record.status == Status.SUPPRESSED.value or record.details.get("manual") == "true":
            return
        external = record.action in {a.value for a in EXTERNAL_ACTIONS}
        if external != (record.status == Status.STARTED.value):
            return
        self.note_executed(record.policy_key, record.action, record.at)

    def cooldown_remaining(self, policy_key: str, action: Action, now: datetime, cooldown_s: float) -> float:
        last = self.last_run.get((policy_key, action.value))
        if last is None or cooldown_s <= 0:
            return 0.0
        return max(0.0, cooldown_s - (now - last).total_seconds())

    def responses_within(self, policy_key: str, now: datetime, window_s: float) -> int:
        times = self.responses.get(policy_key)
        if not times:
            return 0
        horizon = now - timedelta(seconds=window_s)
        while times and times[0] < horizon:
            times.popleft()
        return sum(1 for t in times if t <= now)

    def active_cooldowns(self, config: PolicyConfig, now: datetime) -> list[dict[str, object]]:
        active: list[dict[str, object]] = []
        for (key, action), last in sorted(self.last_run.items()):
            try:
                cooldown = config.cooldown_s(Action(action))
            except ValueError:
                continue
            remaining = max(0.0, cooldown - (now - last).total_seconds())
            if remaining > 0:
                active.append(
                    {
                        "event_type": key,
                        "action": action,
                        "last_run": last.isoformat(),
                        "cooldown_s": cooldown,
                        "remaining_s": round(remaining, 3),
                    }
                )
        return active


def apply_policies(
    decision: Decision,
    state: PolicyState,
    config: PolicyConfig,
    now: datetime,
    in_progress: Iterable[Action] = (),
) -> list[Decision]:
    """The decisions a rule's decision becomes under the policies (see the module doc).

    Returns one or two decisions: a suppressed original plus its substitute, or the
    (possibly suppressed) decision itself.
    """
    out: list[Decision] = []
    current = decision
    key = decision.condition.policy_key
    if current.action is Action.NONE:
        return [current]

    if current.action in QUIET_HOURS_ACTIONS and config.quiet_hours.active(now):
        out.append(_suppress(current, "quiet_hours", f"quiet hours: {current.action.value} becomes an alert"))
        current = Decision(
            condition=current.condition,
            rule_id=current.rule_id,
            action=Action.ALERT,
            replaces=current.action,
            note=f"quiet hours: {current.action.value} needs a person",
        )

    responses = state.responses_within(key, now, config.dampening_window_s)
    if current.action is not Action.MONITOR and responses > config.dampening_max_responses:
        out.append(
            _suppress(
                current,
                "dampening",
                f"{responses} responses to {key} within {config.dampening_window_s:.0f}s: monitor only",
            )
        )
        current = Decision(
            condition=current.condition,
            rule_id=current.rule_id,
            action=Action.MONITOR,
            replaces=current.replaces or current.action,
            note="dampening",
        )

    if current.action in set(in_progress):
        out.append(_suppress(current, "in_progress", f"a {current.action.value} is already running"))
        return out

    remaining = state.cooldown_remaining(key, current.action, now, config.cooldown_s(current.action))
    if remaining > 0:
        out.append(
            _suppress(
                current,
                "cooldown",
                f"{current.action.value} for {key} in cooldown for another {remaining:.0f}s",
            )
        )
        return out
    out.append(current)
    return out


def _suppress(decision: Decision, reason: str, note: str) -> Decision:
    return Decision(
        condition=decision.condition,
        rule_id=decision.rule_id,
        action=decision.action,
        suppressed_reason=reason,
        replaces=decision.replaces,
        notify=False,
        note=note,
    )

"""Seeded, realistic synthetic card transactions with a hidden fraud label.

Design:

* A fixed population of accounts is drawn once per seed. Each account has persistent
  behaviour (home country, typical ticket size, credit limit, activity rate, channel
  preferences, travel propensity), so velocity and 30-day-average features are
  coherent with the account rather than independent noise.
* Rows are drawn column-wise with numpy, so tens of thousands of rows take well
  under a second.
* About ``fraud_rate`` of the rows are frauds. A fraud row follows one of a few hidden
  modi operandi that override several features at once (card-not-present with a
  stolen card, account takeover, card testing bursts, "stealthy" frauds that look
  almost legitimate). Legitimate rows also produce risky-looking values (travel, new
  phones), so the label is learnable but not trivially separable.
* Scenarios shift chosen distributions on demand (see :data:`SCENARIOS`); the account
  population does not depend on the scenario, so one seed gives comparable worlds.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from fraud_model.contract import (
    CHANNELS,
    COUNTRIES,
    COUNTRY_CURRENCY,
    DEVICE_TYPES,
    LABEL_KEY,
    MERCHANT_CATEGORIES,
    RANGES,
    feedback_label,
)

SCENARIOS: Final[dict[str, str]] = {
    "baseline": "Steady state: the world the first champion is trained on.",
    "merchant_mix_shift": (
        "A new merchant mix: electronics, jewelry, online gaming and crypto exchanges grow while "
        "grocery, restaurants and fuel shrink (category, merchant risk and ticket sizes move)."
    ),
    "amount_inflation": "Prices rise: amounts, 24h sums and 30-day averages are about 1.8x higher.",
    "new_fraud_pattern": (
        "Concept drift: most frauds become skimmed-card, card-present cash-outs at ordinary "
        "merchants on old accounts with low amounts; marginal feature drift is mild but the "
        "baseline model misses them."
    ),
    "fraud_wave": (
        "Data and concept drift together: the merchant mix of merchant_mix_shift while fraud "
        "moves to the new_fraud_pattern modi operandi; a model retrained on recent labels wins."
    ),
    "night_shift": "Activity moves into the evening and night (hour-of-day distribution shifts).",
    "device_shift": (
        "Customers move from desktop to phones and tablets and many change devices "
        "(device type and new-device rate shift)."
    ),
    "gradual": (
        "Gradual drift: each row comes from fraud_wave with a probability that grows linearly "
        "from 0 to 1 over ``gradual_rows`` rows after the switch, otherwise from the baseline."
    ),
    "concept": (
        "Pure concept drift: every feature is drawn exactly as in the baseline, only the labels "
        "change: evening pharmacy purchases are now mostly fraud and half of the old frauds are "
        "no longer charged back; the fraud rate stays about the same, so neither feature nor "
        "target drift shows, only the model's quality drops."
    ),
}

# Features whose marginal distribution a scenario moves clearly (PSI well above 0.1).
_AFFECTED: Final[dict[str, tuple[str, ...]]] = {
    "baseline": (),
    "merchant_mix_shift": (
        "merchant_category",
        "merchant_risk_score",
        "amount",
        "log_amount",
        "amount_to_avg_ratio",
        "amount_to_limit",
    ),
    "amount_inflation": ("amount", "amount_sum_24h", "amount_avg_30d", "log_amount", "amount_to_limit"),
    "new_fraud_pattern": (),
    "fraud_wave": (
        "merchant_category",
        "merchant_risk_score",
        "amount",
        "log_amount",
        "amount_to_avg_ratio",
        "amount_to_limit",
    ),
    "night_shift": ("hour_of_day", "is_night"),
    "device_shift": ("device_type", "is_new_device"),
    # Once the ramp is complete, the features of fraud_wave.
    "gradual": (
        "merchant_category",
        "merchant_risk_score",
        "amount",
        "log_amount",
        "amount_to_avg_ratio",
        "amount_to_limit",
    ),
    "concept": (),
}


def affected_features(scenario: str) -> list[str]:
    """Feature names whose marginal distribution ``scenario`` shifts materially.

    ``new_fraud_pattern`` and ``concept`` return an empty list on purpose: they are
    concept drift (what fraud looks like changes) and leave the marginals (almost, for
    ``concept`` exactly) untouched.
    """
    _check_scenario(scenario)
    return list(_AFFECTED[scenario])


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")


# --------------------------------------------------------------------------- tables

_CAT = {name: i for i, name in enumerate(MERCHANT_CATEGORIES)}
_CH = {name: i for i, name in enumerate(CHANNELS)}
_DEV = {name: i for i, name in enumerate(DEVICE_TYPES)}
_CTRY = {name: i for i, name in enumerate(COUNTRIES)}
_N_CAT, _N_CTRY = len(MERCHANT_CATEGORIES), len(COUNTRIES)
_MERCHANTS_PER_CATEGORY: Final[int] = 150
_COMPROMISED_MERCHANTS: Final[int] = 12  # skimmer sites of the new fraud pattern


def _probs(weights: Mapping[str, float], index: Mapping[str, int], size: int) -> np.ndarray:
    p = np.zeros(size)
    for name, w in weights.items():
        p[index[name]] = w
    return p / p.sum()


def _cat_matrix(per_channel: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    return np.stack([_probs(per_channel[ch], _CAT, _N_CAT) for ch in CHANNELS])


_BASE_CATEGORY_MIX = _cat_matrix(
    {
        "pos": {
            "grocery": 26,
            "restaurant": 22,
            "fuel": 14,
            "retail": 16,
            "electronics": 4,
            "travel": 2,
            "entertainment": 6,
            "jewelry": 2,
            "pharmacy": 8,
        },
        "online": {
            "grocery": 8,
            "restaurant": 8,
            "retail": 30,
            "electronics": 12,
            "travel": 10,
            "entertainment": 12,
            "online_gaming": 8,
            "crypto_exchange": 3,
            "money_transfer": 5,
            "jewelry": 2,
            "pharmacy": 2,
        },
        "atm": {"money_transfer": 1},
        "mobile_app": {
            "grocery": 10,
            "restaurant": 20,
            "retail": 20,
            "electronics": 6,
            "travel": 6,
            "entertainment": 12,
            "online_gaming": 10,
            "crypto_exchange": 4,
            "money_transfer": 10,
            "jewelry": 1,
            "pharmacy": 1,
        },
    }
)

_SHIFTED_CATEGORY_MIX = _cat_matrix(
    {
        "pos": {
            "grocery": 10,
            "restaurant": 10,
            "fuel": 6,
            "retail": 16,
            "electronics": 24,
            "travel": 6,
            "entertainment": 10,
            "jewelry": 14,
            "pharmacy": 4,
        },
        "online": {
            "grocery": 2,
            "restaurant": 2,
            "retail": 12,
            "electronics": 26,
            "travel": 10,
            "entertainment": 6,
            "online_gaming": 16,
            "crypto_exchange": 14,
            "money_transfer": 6,
            "jewelry": 6,
            "pharmacy": 1,
        },
        "atm": {"money_transfer": 1},
        "mobile_app": {
            "grocery": 4,
            "restaurant": 7,
            "retail": 12,
            "electronics": 16,
            "travel": 6,
            "entertainment": 7,
            "online_gaming": 18,
            "crypto_exchange": 14,
            "money_transfer": 10,
            "jewelry": 5,
            "pharmacy": 1,
        },
    }
)

# Ticket size of a category relative to the account's typical amount.
_CATEGORY_AMOUNT = _probs(
    {
        "grocery": 0.9,
        "restaurant": 0.55,
        "fuel": 0.75,
        "retail": 1.0,
        "electronics": 2.8,
        "travel": 4.0,
        "entertainment": 0.8,
        "online_gaming": 0.45,
        "crypto_exchange": 2.5,
        "money_transfer": 2.0,
        "jewelry": 4.5,
        "pharmacy": 0.5,
    },
    _CAT,
    _N_CAT,
)
_CATEGORY_AMOUNT = _CATEGORY_AMOUNT / _CATEGORY_AMOUNT[_CAT["retail"]]

# Mean merchant risk score per category (merchants scatter around it).
_CATEGORY_RISK = np.array(
    [
        {
            "grocery": 0.05,
            "restaurant": 0.06,
            "fuel": 0.08,
            "retail": 0.08,
            "electronics": 0.18,
            "travel": 0.12,
            "entertainment": 0.10,
            "online_gaming": 0.30,
            "crypto_exchange": 0.45,
            "money_transfer": 0.35,
            "jewelry": 0.25,
            "pharmacy": 0.05,
        }[c]
        for c in MERCHANT_CATEGORIES
    ]
)
_INSTALLMENT_CATEGORIES = np.isin(
    np.arange(_N_CAT), [_CAT[c] for c in ("electronics", "jewelry", "travel", "retail")]
)

_HOME_COUNTRY_P = _probs(
    {
        "US": 30,
        "GB": 10,
        "DE": 8,
        "FR": 7,
        "KR": 12,
        "JP": 6,
        "CA": 5,
        "AU": 4,
        "ES": 3,
        "IT": 3,
        "NL": 3,
        "SG": 2,
        "IN": 2,
        "BR": 2,
        "MX": 1,
        "AE": 1,
        "ZA": 1,
    },
    _CTRY,
    _N_CTRY,
)
_TRAVEL_COUNTRY_P = _probs(
    {c: 1.0 for c in COUNTRIES} | {"US": 6, "GB": 4, "FR": 5, "ES": 4, "IT": 4, "JP": 3, "MX": 3, "AE": 2},
    _CTRY,
    _N_CTRY,
)
_FRAUD_COUNTRY_P = _probs(
    {c: 1.0 for c in COUNTRIES} | {"NG": 8, "RU": 8, "BR": 5, "CN": 5, "IN": 4, "MX": 3, "AE": 3, "ZA": 3},
    _CTRY,
    _N_CTRY,
)

_BASE_HOURS = np.array(
    [0.6, 0.35, 0.25, 0.2, 0.2, 0.35, 0.9, 2.0, 3.4, 4.2, 4.8, 5.4]
    + [6.2, 5.8, 5.3, 5.2, 5.5, 6.0, 6.6, 6.4, 5.6, 4.4, 3.0, 1.6]
)
_BASE_HOURS = _BASE_HOURS / _BASE_HOURS.sum()
# Night owls: the same daily curve, six hours later (peak around midnight).
_NIGHT_HOURS = np.roll(_BASE_HOURS, 6)
_FRAUD_HOURS = np.array([3.0] * 5 + [2.0] * 3 + [1.5] * 10 + [2.5] * 3 + [3.0] * 3)
_FRAUD_HOURS = _FRAUD_HOURS / _FRAUD_HOURS.sum()
_EVENING_HOURS = np.array([0.0] * 18 + [1.0, 1.5, 2.0, 2.0, 1.5, 1.0])
_EVENING_HOURS = _EVENING_HOURS / _EVENING_HOURS.sum()
_WEEKDAYS = np.array([0.135, 0.135, 0.14, 0.145, 0.16, 0.155, 0.13])
_WEEKDAYS = _WEEKDAYS / _WEEKDAYS.sum()

# Fraud modi operandi.
_CNP, _TAKEOVER, _CARD_TESTING, _STEALTH, _SKIMMING = range(5)
_BASE_PATTERNS = np.array([0.42, 0.24, 0.14, 0.20, 0.0])
_NEW_PATTERNS = np.append(_BASE_PATTERNS[:4] * 0.35, 0.65)


@dataclass(frozen=True)
class _ScenarioParams:
    category_mix: np.ndarray = field(default_factory=lambda: _BASE_CATEGORY_MIX)
    online_devices: tuple[float, float, float] = (0.30, 0.60, 0.10)  # mobile, desktop, tablet
    app_tablet_share: float = 0.10
    new_device_rate: float = 0.04
    hours: np.ndarray = field(default_factory=lambda: _BASE_HOURS)
    amount_factor: float = 1.0
    fraud_patterns: np.ndarray = field(default_factory=lambda: _BASE_PATTERNS)


_SCENARIO_PARAMS: Final[dict[str, _ScenarioParams]] = {
    "baseline": _ScenarioParams(),
    "merchant_mix_shift": _ScenarioParams(category_mix=_SHIFTED_CATEGORY_MIX),
    "amount_inflation": _ScenarioParams(amount_factor=1.8),
    "new_fraud_pattern": _ScenarioParams(fraud_patterns=_NEW_PATTERNS),
    "fraud_wave": _ScenarioParams(category_mix=_SHIFTED_CATEGORY_MIX, fraud_patterns=_NEW_PATTERNS),
    "night_shift": _ScenarioParams(hours=_NIGHT_HOURS),
    "device_shift": _ScenarioParams(
        online_devices=(0.55, 0.20, 0.25), app_tablet_share=0.30, new_device_rate=0.25
    ),
    # Rows of these two are drawn with baseline or fraud_wave parameters (see _columns).
    "gradual": _ScenarioParams(),
    "concept": _ScenarioParams(),
}
# The concept scenario's new fraud segment (about 1.2 % of baseline rows) and how much of it is fraud.
_CONCEPT_CATEGORY, _CONCEPT_FROM_HOUR, _CONCEPT_SEGMENT_FRAUD = "pharmacy", 18, 0.8
# Share of the old frauds the concept scenario no longer labels as fraud.
_CONCEPT_DROPPED_FRAUD = 0.5


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row; ``probs`` is ``[n, k]`` (rows sum to 1)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probs.shape[1] - 1)


@dataclass(frozen=True)
class _Accounts:
    ids: list[str]
    activity_p: np.ndarray
    daily_rate: np.ndarray
    home: np.ndarray
    customer_age: np.ndarray
    account_age: np.ndarray
    email_age: np.ndarray
    typical_amount: np.ndarray
    credit_limit: np.ndarray
    travel_rate: np.ndarray
    channel_p: np.ndarray
    old: np.ndarray  # indices of accounts older than two years


def _make_accounts(rng: np.random.Generator, n: int) -> _Accounts:
    activity = rng.lognormal(0.0, 0.7, n)
    customer_age = np.clip(rng.normal(42, 14, n), 18, 90).astype(np.int64)
    # Prime-age customers spend more per ticket.
    age_factor = 1.0 + 0.4 * np.exp(-(((customer_age - 45) / 15.0) ** 2))
    typical = rng.lognormal(np.log(38.0), 0.6, n) * age_factor
    limit = np.clip(np.round(typical * rng.lognormal(np.log(60.0), 0.4, n), -2), 500, 50_000)
    new_account = rng.random(n) < 0.08
    account_age = np.where(
        new_account, rng.integers(1, 120, n), np.clip(rng.lognormal(np.log(1100.0), 0.8, n), 120, 15_000)
    ).astype(np.int64)
    email_age = np.clip(rng.lognormal(np.log(2600.0), 0.7, n), 30, 11_000).astype(np.int64)
    channel_base = np.array([0.40, 0.30, 0.05, 0.25])  # pos, online, atm, mobile_app
    channel_p = rng.dirichlet(channel_base * 25, size=n)
    return _Accounts(
        ids=[f"acc_{i:06d}" for i in range(n)],
        activity_p=activity / activity.sum(),
        daily_rate=2.5 * activity,
        home=rng.choice(_N_CTRY, size=n, p=_HOME_COUNTRY_P),
        customer_age=customer_age,
        account_age=account_age,
        email_age=email_age,
        typical_amount=typical,
        credit_limit=limit,
        travel_rate=rng.beta(1.2, 40.0, n),
        channel_p=channel_p,
        old=np.flatnonzero(account_age > 730),
    )


class TransactionGenerator:
    """Reproducible stream of synthetic transactions.

    Args:
        seed: same seed -> same accounts, merchants and sequence of rows.
        scenario: one of :data:`SCENARIOS`; can be changed later via :attr:`scenario`
            (e.g. to inject drift in the middle of a stream).
        fraud_rate: expected share of fraud rows.
        n_accounts: size of the account population.
        gradual_rows: rows over which the ``gradual`` scenario ramps from baseline to fraud_wave.

    Rows are dicts with every contract field plus the hidden label under ``is_fraud``
    (use :func:`fraud_model.contract.transaction_payload` before publishing).
    """

    def __init__(
        self,
        seed: int,
        scenario: str = "baseline",
        fraud_rate: float = 0.02,
        n_accounts: int = 5_000,
        gradual_rows: int = 20_000,
    ) -> None:
        _check_scenario(scenario)
        if not 0.0 <= fraud_rate < 1.0:
            raise ValueError("fraud_rate must be in [0, 1)")
        if n_accounts < 10:
            raise ValueError("n_accounts must be at least 10")
        if gradual_rows < 1:
            raise ValueError("gradual_rows must be positive")
        self.gradual_rows = gradual_rows
        self._gradual_start = 0
        self.seed = seed
        self.fraud_rate = fraud_rate
        self._scenario = scenario
        # Separate streams: the world (accounts, merchants) must not depend on how many
        # rows were drawn or on the scenario.
        world_rng = np.random.default_rng([seed, 1])
        self._rng = np.random.default_rng([seed, 2])
        self._accounts = _make_accounts(world_rng, n_accounts)
        concentration = 14.0
        mean = np.repeat(_CATEGORY_RISK[:, None], _MERCHANTS_PER_CATEGORY, axis=1)
        self._merchant_risk = world_rng.beta(mean * concentration, (1 - mean) * concentration)
        self._rows_per_day = float(self._accounts.daily_rate.sum())
        self._generated = 0

    @property
    def scenario(self) -> str:
        """The active scenario; assigning switches it for all later rows."""
        return self._scenario

    @scenario.setter
    def scenario(self, value: str) -> None:
        _check_scenario(value)
        if value == "gradual" and self._scenario != "gradual":
            self._gradual_start = self._generated
        self._scenario = value

    @property
    def drifted_share(self) -> float:
        """Share of fraud_wave rows the ``gradual`` scenario draws now (1 or 0 for the others)."""
        if self._scenario == "gradual":
            return min(1.0, (self._generated - self._gradual_start) / self.gradual_rows)
        return 0.0 if self._scenario == "baseline" else 1.0

    @property
    def generated(self) -> int:
        """Number of rows produced so far."""
        return self._generated

    def generate(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` rows as dicts (contract fields + ``is_fraud``)."""
        columns = self._columns(n)
        keys = list(columns)
        values = [columns[k] for k in keys]
        return [dict(zip(keys, row, strict=True)) for row in zip(*values, strict=True)]

    def generate_frame(self, n: int) -> pd.DataFrame:
        """The next ``n`` rows as a DataFrame (faster than dicts for training sets)."""
        return pd.DataFrame(self._columns(n))

    def stream(self, batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """Endless iterator of rows; follows :attr:`scenario` changes batch by batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        while True:
            yield from self.generate(batch_size)

    # ------------------------------------------------------------------ internals

    def _columns(self, n: int) -> dict[str, list[Any]]:
        if n < 0:
            raise ValueError("n must be non-negative")
        if self._scenario == "gradual":
            return self._gradual_columns(n)
        if self._scenario == "concept":
            return self._concept_columns(n)
        return self._draw(n, _SCENARIO_PARAMS[self._scenario])

    def _gradual_columns(self, n: int) -> dict[str, list[Any]]:
        """A mix of fraud_wave and baseline rows, the drifted share growing row by row."""
        drifted = int(self._rng.binomial(n, self.drifted_share)) if n else 0
        parts = [
            self._draw(drifted, _SCENARIO_PARAMS["fraud_wave"]),
            self._draw(n - drifted, _SCENARIO_PARAMS["baseline"]),
        ]
        order = self._rng.permutation(n).tolist()
        merged = {key: parts[0][key] + parts[1][key] for key in parts[0]}
        return {key: [values[i] for i in order] for key, values in merged.items()}

    def _concept_columns(self, n: int) -> dict[str, list[Any]]:
        """Baseline rows whose labels follow the concept scenario's new rule."""
        out = self._draw(n, _SCENARIO_PARAMS["baseline"])
        rng = self._rng
        is_fraud = np.asarray(out[LABEL_KEY], dtype=bool)
        segment = (np.asarray(out["merchant_category"]) == _CONCEPT_CATEGORY) & (
            np.asarray(out["hour_of_day"]) >= _CONCEPT_FROM_HOUR
        )
        dropped = is_fraud & (rng.random(n) < _CONCEPT_DROPPED_FRAUD)
        added = segment & (rng.random(n) < _CONCEPT_SEGMENT_FRAUD)
        out[LABEL_KEY] = ((is_fraud & ~dropped) | added).tolist()
        return out

    def _draw(self, n: int, params: _ScenarioParams) -> dict[str, list[Any]]:
        rng, acc_tbl = self._rng, self._accounts
        elapsed_days = int(self._generated / self._rows_per_day)

        # Who is defrauded and how comes first: some modi operandi pick their own victims.
        is_fraud = rng.random(n) < self.fraud_rate
        pattern = np.full(n, -1)
        fraud_idx = np.flatnonzero(is_fraud)
        pattern[fraud_idx] = rng.choice(
            len(params.fraud_patterns), size=len(fraud_idx), p=params.fraud_patterns
        )

        acc = rng.choice(len(acc_tbl.ids), size=n, p=acc_tbl.activity_p)
        skim = np.flatnonzero(pattern == _SKIMMING)
        if len(skim) and len(acc_tbl.old):
            acc[skim] = rng.choice(acc_tbl.old, size=len(skim))

        home = acc_tbl.home[acc]
        typical = acc_tbl.typical_amount[acc]
        limit = acc_tbl.credit_limit[acc]
        rate = acc_tbl.daily_rate[acc]

        # --- legitimate behaviour for every row -------------------------------
        channel = _pick(rng, acc_tbl.channel_p[acc])
        category = _pick(rng, params.category_mix[channel])
        merchant = rng.integers(0, _MERCHANTS_PER_CATEGORY, n)

        device = np.empty(n, dtype=np.int64)
        device[channel == _CH["pos"]] = _DEV["pos_terminal"]
        device[channel == _CH["atm"]] = _DEV["atm"]
        online = np.flatnonzero(channel == _CH["online"])
        device[online] = rng.choice(
            [_DEV["mobile"], _DEV["desktop"], _DEV["tablet"]], size=len(online), p=params.online_devices
        )
        app = np.flatnonzero(channel == _CH["mobile_app"])
        device[app] = np.where(rng.random(len(app)) < params.app_tablet_share, _DEV["tablet"], _DEV["mobile"])
        card_present = (channel == _CH["pos"]) | (channel == _CH["atm"])
        new_device = ~card_present & (rng.random(n) < params.new_device_rate)

        foreign = rng.random(n) < acc_tbl.travel_rate[acc]
        destination = rng.choice(_N_CTRY, size=n, p=_TRAVEL_COUNTRY_P)
        foreign &= destination != home
        country = np.where(foreign, destination, home)
        distance = np.where(
            foreign, rng.uniform(400, 11_000, n), np.minimum(rng.lognormal(np.log(6.0), 0.9, n), 300)
        )

        hour = rng.choice(24, size=n, p=params.hours)
        weekday = rng.choice(7, size=n, p=_WEEKDAYS)

        amount = typical * _CATEGORY_AMOUNT[category] * rng.lognormal(0.0, 0.55, n)
        atm = channel == _CH["atm"]
        amount[atm] = np.maximum(20.0, np.round(amount[atm] / 20.0) * 20.0)
        avg_30d = typical * 1.1 * rng.lognormal(0.0, 0.1, n)

        count_24h = rng.poisson(rate)
        count_1h = rng.binomial(count_24h, 0.06)
        sum_24h = np.where(count_24h > 0, count_24h * typical * rng.lognormal(0.0, 0.35, n), 0.0)
        days_since = self._days_since(count_1h, count_24h, rate)
        failed_logins = rng.poisson(0.04, n)
        ip_risk = np.where(card_present, rng.beta(1.0, 40.0, n), rng.beta(1.3, 11.0, n))
        email_age = acc_tbl.email_age[acc] + elapsed_days
        installment_p = np.where((amount > 250) & _INSTALLMENT_CATEGORIES[category], 0.3, 0.01)
        installments = np.where(
            rng.random(n) < installment_p,
            rng.choice([2, 3, 6, 10, 12, 24], size=n, p=[0.2, 0.3, 0.25, 0.1, 0.1, 0.05]),
            0,
        )

        # --- fraud modi operandi override several features at once -----------
        cols = {
            "channel": channel,
            "category": category,
            "merchant": merchant,
            "device": device,
            "new_device": new_device,
            "country": country,
            "distance": distance,
            "hour": hour,
            "amount": amount,
            "count_1h": count_1h,
            "count_24h": count_24h,
            "sum_24h": sum_24h,
            "days_since": days_since,
            "failed_logins": failed_logins,
            "ip_risk": ip_risk,
            "email_age": email_age,
            "installments": installments,
        }
        self._apply_fraud(cols, pattern, home, typical, limit, rate)
        channel, category, device = cols["channel"], cols["category"], cols["device"]
        card_present = (channel == _CH["pos"]) | (channel == _CH["atm"])
        count_24h = np.maximum(cols["count_24h"], cols["count_1h"])

        # Prices are inflated after the fraud logic so every ticket scales alike.
        factor = params.amount_factor
        amount = np.clip(np.round(cols["amount"] * factor, 2), *RANGES["amount"])
        sum_24h = np.round(cols["sum_24h"] * factor, 2)
        avg_30d = np.round(avg_30d * factor, 2)

        ids_raw = rng.bytes(16 * n)
        self._generated += n
        country_codes = np.asarray(COUNTRIES)[cols["country"]]
        out: dict[str, list[Any]] = {
            "transaction_id": [
                str(uuid.UUID(bytes=ids_raw[16 * i : 16 * i + 16], version=4)) for i in range(n)
            ],
            "account_id": [acc_tbl.ids[a] for a in acc.tolist()],
            "merchant_id": [
                f"mer_{c:02d}_{m:04d}"
                for c, m in zip(category.tolist(), cols["merchant"].tolist(), strict=True)
            ],
            "amount": amount.tolist(),
            "currency": [COUNTRY_CURRENCY[c] for c in country_codes.tolist()],
            "merchant_category": np.asarray(MERCHANT_CATEGORIES)[category].tolist(),
            "channel": np.asarray(CHANNELS)[channel].tolist(),
            "device_type": np.asarray(DEVICE_TYPES)[device].tolist(),
            "country": country_codes.tolist(),
            "home_country": np.asarray(COUNTRIES)[home].tolist(),
            "hour_of_day": cols["hour"].astype(np.int64).tolist(),
            "day_of_week": weekday.astype(np.int64).tolist(),
            "account_age_days": (acc_tbl.account_age[acc] + elapsed_days).tolist(),
            "customer_age": acc_tbl.customer_age[acc].tolist(),
            "card_present": card_present.tolist(),
            "is_new_device": (cols["new_device"] & ~card_present).tolist(),
            "distance_from_home_km": np.round(cols["distance"], 1).tolist(),
            "txn_count_1h": cols["count_1h"].astype(np.int64).tolist(),
            "txn_count_24h": count_24h.astype(np.int64).tolist(),
            "amount_sum_24h": sum_24h.tolist(),
            "amount_avg_30d": avg_30d.tolist(),
            "days_since_last_txn": np.round(cols["days_since"], 4).tolist(),
            "failed_logins_24h": cols["failed_logins"].astype(np.int64).tolist(),
            "merchant_risk_score": np.round(self._merchant_risk[category, cols["merchant"]], 4).tolist(),
            "ip_risk_score": np.round(cols["ip_risk"], 4).tolist(),
            "email_domain_age_days": cols["email_age"].astype(np.int64).tolist(),
            "credit_limit": limit.astype(np.float64).tolist(),
            "installment_months": cols["installments"].astype(np.int64).tolist(),
            LABEL_KEY: is_fraud.tolist(),
        }
        return out

    def _days_since(self, count_1h: np.ndarray, count_24h: np.ndarray, rate: np.ndarray) -> np.ndarray:
        rng = self._rng
        # The most recent of k uniformly spread earlier transactions is Beta(1, k) away.
        within_hour = rng.beta(1.0, np.maximum(count_1h, 1)) / 24.0
        within_day = 1.0 / 24.0 + rng.beta(1.0, np.maximum(count_24h, 1)) * (23.0 / 24.0)
        older = np.minimum(1.0 + rng.exponential(1.0 / np.maximum(rate, 0.05)), 365.0)
        return np.where(count_1h > 0, within_hour, np.where(count_24h > 0, within_day, older))

    def _apply_fraud(
        self,
        cols: dict[str, np.ndarray],
        pattern: np.ndarray,
        home: np.ndarray,
        typical: np.ndarray,
        limit: np.ndarray,
        rate: np.ndarray,
    ) -> None:
        rng = self._rng
        online_channels = np.array([_CH["online"], _CH["mobile_app"]])

        def remote(idx: np.ndarray, app_share: float) -> None:
            """Card-not-present: web or app, on a customer-like device."""
            k = len(idx)
            ch = np.where(rng.random(k) < app_share, online_channels[1], online_channels[0])
            cols["channel"][idx] = ch
            web_device = rng.choice(
                [_DEV["desktop"], _DEV["mobile"], _DEV["tablet"]], size=k, p=[0.5, 0.35, 0.15]
            )
            cols["device"][idx] = np.where(ch == _CH["mobile_app"], _DEV["mobile"], web_device)

        def categories(idx: np.ndarray, weights: Mapping[str, float]) -> None:
            cols["category"][idx] = rng.choice(_N_CAT, size=len(idx), p=_probs(weights, _CAT, _N_CAT))

        def abroad(idx: np.ndarray, share: float) -> None:
            k = len(idx)
            dest = rng.choice(_N_CTRY, size=k, p=_FRAUD_COUNTRY_P)
            go = (rng.random(k) < share) & (dest != home[idx])
            cols["country"][idx] = np.where(go, dest, home[idx])
            cols["distance"][idx] = np.where(
                go, rng.uniform(800, 14_000, k), np.minimum(rng.lognormal(np.log(40.0), 1.2, k), 2_000)
            )

        # Card-not-present with stolen card details.
        idx = np.flatnonzero(pattern == _CNP)
        k = len(idx)
        remote(idx, app_share=0.35)
        categories(
            idx,
            {
                "electronics": 30,
                "crypto_exchange": 12,
                "online_gaming": 15,
                "jewelry": 10,
                "money_transfer": 8,
                "retail": 15,
                "travel": 10,
            },
        )
        abroad(idx, 0.35)
        cols["new_device"][idx] = rng.random(k) < 0.6
        cols["hour"][idx] = rng.choice(24, size=k, p=_FRAUD_HOURS)
        cols["amount"][idx] = typical[idx] * rng.lognormal(np.log(3.0), 0.7, k)
        cols["ip_risk"][idx] = rng.beta(3.5, 3.0, k)
        fresh_email = rng.random(k) < 0.5
        cols["email_age"][idx] = np.where(
            fresh_email, np.clip(rng.lognormal(np.log(40.0), 1.0, k), 1, 3_000), cols["email_age"][idx]
        )
        cols["installments"][idx] = 0

        # Account takeover: failed logins, new device, big transfers near the limit.
        idx = np.flatnonzero(pattern == _TAKEOVER)
        k = len(idx)
        remote(idx, app_share=0.6)
        categories(idx, {"money_transfer": 40, "crypto_exchange": 30, "electronics": 15, "jewelry": 15})
        abroad(idx, 0.25)
        cols["failed_logins"][idx] = 1 + rng.poisson(2.5, k)
        cols["new_device"][idx] = rng.random(k) < 0.85
        cols["hour"][idx] = rng.choice(24, size=k, p=_FRAUD_HOURS)
        cols["amount"][idx] = limit[idx] * rng.uniform(0.25, 0.9, k)
        extra = rng.poisson(1.5, k)
        cols["count_1h"][idx] += extra
        cols["count_24h"][idx] += extra
        cols["sum_24h"][idx] += extra * typical[idx] * 2.0
        cols["ip_risk"][idx] = rng.beta(3.0, 3.0, k)
        cols["installments"][idx] = 0

        # Card testing: bursts of tiny online payments.
        idx = np.flatnonzero(pattern == _CARD_TESTING)
        k = len(idx)
        remote(idx, app_share=0.2)
        categories(idx, {"online_gaming": 35, "retail": 25, "entertainment": 20, "crypto_exchange": 20})
        abroad(idx, 0.3)
        burst = 3 + rng.poisson(5.0, k)
        cols["count_1h"][idx] = burst
        cols["count_24h"][idx] = burst + rng.poisson(rate[idx])
        cols["sum_24h"][idx] = burst * rng.uniform(2.0, 15.0, k) + cols["sum_24h"][idx]
        cols["days_since"][idx] = rng.beta(1.0, burst) / 24.0
        cols["amount"][idx] = rng.uniform(1.0, 25.0, k)
        cols["new_device"][idx] = rng.random(k) < 0.5
        cols["ip_risk"][idx] = rng.beta(3.0, 4.0, k)
        cols["installments"][idx] = 0

        # Stealthy: nearly legitimate, one or two weak signals.
        idx = np.flatnonzero(pattern == _STEALTH)
        k = len(idx)
        cols["amount"][idx] *= rng.lognormal(np.log(1.3), 0.4, k)
        cols["new_device"][idx] |= rng.random(k) < 0.15
        cols["ip_risk"][idx] = np.maximum(cols["ip_risk"][idx], rng.beta(2.0, 8.0, k))

        # Skimmed cards cashed out in person, at a handful of compromised ordinary merchants.
        idx = np.flatnonzero(pattern == _SKIMMING)
        k = len(idx)
        at_atm = rng.random(k) < 0.2
        cols["channel"][idx] = np.where(at_atm, _CH["atm"], _CH["pos"])
        cols["device"][idx] = np.where(at_atm, _DEV["atm"], _DEV["pos_terminal"])
        pos_category = rng.choice(
            [_CAT["fuel"], _CAT["pharmacy"], _CAT["grocery"], _CAT["retail"]],
            size=k,
            p=[0.35, 0.25, 0.25, 0.15],
        )
        cols["category"][idx] = np.where(at_atm, _CAT["money_transfer"], pos_category)
        cols["merchant"][idx] = rng.integers(0, _COMPROMISED_MERCHANTS, k)
        cols["new_device"][idx] = False
        cols["country"][idx] = home[idx]
        cols["distance"][idx] = rng.lognormal(np.log(35.0), 0.5, k)
        cols["hour"][idx] = rng.choice(24, size=k, p=_EVENING_HOURS)
        cols["amount"][idx] = (
            typical[idx] * _CATEGORY_AMOUNT[cols["category"][idx]] * rng.lognormal(np.log(1.2), 0.4, k)
        )
        burst = 1 + rng.poisson(1.2, k)
        cols["count_1h"][idx] = burst
        cols["count_24h"][idx] = burst + rng.poisson(rate[idx])
        cols["days_since"][idx] = rng.beta(1.0, burst) / 24.0
        cols["failed_logins"][idx] = 0
        cols["ip_risk"][idx] = rng.beta(1.0, 40.0, k)
        cols["installments"][idx] = 0


class DelayedLabels:
    """Ground-truth labels that arrive late, and sometimes never.

    A pure helper (no clock, no I/O): callers pass ``now`` in, e.g. ``time.time()`` or
    a simulated clock. Fraud labels come from chargebacks, legitimate ones from the
    dispute window closing without a dispute.

    Args:
        seed: drives the drop decisions and delay jitter.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng([seed, 3])
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self.dropped = 0

    def add(
        self,
        txn: Mapping[str, Any],
        now: float,
        delay_s: float | tuple[float, float],
        drop_rate: float = 0.0,
    ) -> bool:
        """Schedule the label of ``txn`` (needs ``transaction_id`` and ``is_fraud``).

        Args:
            now: current time in seconds.
            delay_s: fixed delay, or ``(low, high)`` for a uniform random delay.
            drop_rate: probability that this label never arrives.

        Returns:
            ``False`` if the label was dropped, ``True`` if it was scheduled.
        """
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError("drop_rate must be in [0, 1]")
        if self._rng.random() < drop_rate:
            self.dropped += 1
            return False
        if isinstance(delay_s, tuple):
            low, high = delay_s
            delay = float(self._rng.uniform(low, high)) if high > low else float(low)
        else:
            delay = float(delay_s)
        if delay < 0:
            raise ValueError("delay must be non-negative")
        is_fraud = bool(txn[LABEL_KEY])
        label = feedback_label(
            str(txn["transaction_id"]), is_fraud, "chargeback" if is_fraud else "no_dispute"
        )
        heapq.heappush(self._heap, (now + delay, next(self._seq), label))
        return True

    def due(self, now: float) -> list[dict[str, Any]]:
        """Pop every label whose due time is ``<= now``, oldest first."""
        out: list[dict[str, Any]] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due(self) -> float | None:
        """Due time of the next pending label, if any."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

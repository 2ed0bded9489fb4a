"""Filters shared by the pruning tests and the harness self-checks: each has
the Floe SQL predicate and the equivalent pyiceberg expression, so the
expected file counts come from pyiceberg's own scan planning."""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)


@dataclass(frozen=True)
class PruneCase:
    id: str
    sql_predicate: str                 # Floe SQL (DataFusion dialect), over demo.events
    iceberg_filter: BooleanExpression  # the same predicate for pyiceberg
    expect_pruning: bool               # must select fewer files than the table has

    def __str__(self) -> str:
        return self.id


PRUNE_CASES = [
    # one UTC day of the day(ts) partition; the day straddles two appends -> 8 files
    PruneCase(
        "ts_one_day",
        "ts >= TIMESTAMP '2024-03-03 00:00:00' AND ts < TIMESTAMP '2024-03-04 00:00:00'",
        And(
            GreaterThanOrEqual("ts", "2024-03-03T00:00:00+00:00"),
            LessThan("ts", "2024-03-04T00:00:00+00:00"),
        ),
        True,
    ),
    # non-partition column: only lower/upper bounds can prune
    PruneCase(
        "event_id_range",
        "event_id >= 7000 AND event_id <= 7010",
        And(GreaterThanOrEqual("event_id", 7000), LessThanOrEqual("event_id", 7010)),
        True,
    ),
    # identity partition
    PruneCase("city_identity", "city = 'Lisbon'", EqualTo("city", "Lisbon"), True),
    # every file's user_id bounds cover the value: nothing may be pruned
    PruneCase("user_id_no_pruning", "user_id = 42", EqualTo("user_id", 42), False),
]

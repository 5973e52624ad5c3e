"""The state rule on its own: the table, the decisions, and order independence (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api import states
from api.states import decide, state_of

RAW = sorted(states.RAW_TO_STATE) + ["esme_rinvdstaddr", "esme_rthrottled", "weird", "ENROUTE", "DELIVRD"]


@pytest.mark.parametrize("raw, state", [
    ("ESME_ROK", "accepted"), ("ACCEPTD", "accepted"), ("DELIVRD", "delivered"), ("delivered", "delivered"),
    ("UNDELIV", "failed"), ("REJECTD", "failed"), ("EXPIRED", "failed"), ("DELETED", "failed"),
    ("ESME_RINVDSTADR", "failed"), ("ESME_RSUBMITFAIL", "failed"), ("ESME_RTHROTTLED", None),
    ("UNKNOWN", "accepted"), ("banana", None),
])
def test_the_table(raw, state):
    assert state_of(raw) == state


def test_a_late_level_1_never_undoes_delivered():
    d = decide("delivered", "delivrd", "ESME_ROK")
    assert not d.changed and (d.state, d.delivery_status) == ("delivered", "delivrd")
    assert "already final" in d.reason


def test_acceptd_after_undeliv_changes_nothing():
    d = decide("failed", "undeliv", "ACCEPTD")
    assert not d.changed and (d.state, d.delivery_status) == ("failed", "undeliv")


def test_the_same_receipt_twice():
    first = decide("submitted", "submitted", "DELIVRD")
    second = decide(first.state, first.delivery_status, "DELIVRD")
    assert first.changed and not second.changed and second.reason.startswith("duplicate")


def test_disagreeing_finals_delivered_wins_and_is_flagged_either_way():
    a = decide("failed", "undeliv", "DELIVRD")
    b = decide("delivered", "delivrd", "UNDELIV")
    assert (a.changed, a.state, a.conflict) == (True, "delivered", True)
    assert (b.changed, b.state, b.conflict) == (False, "delivered", True)


def test_unknown_statuses_are_recorded_not_applied():
    d = decide("submitted", "submitted", "PENDING_SOMETHING")
    assert not d.changed and d.state == "submitted" and "unknown" in d.reason


def fold(receipts: list[str]) -> tuple[str, str, bool]:
    state, raw, conflict = "submitted", "submitted", False
    for receipt in receipts:
        d = decide(state, raw, receipt)
        state, raw, conflict = d.state, d.delivery_status, conflict or d.conflict
    return state, raw, conflict


@settings(max_examples=500)
@given(st.lists(st.sampled_from(RAW), min_size=1, max_size=8), st.randoms(use_true_random=False),
       st.lists(st.integers(min_value=0, max_value=7), max_size=5))
def test_any_order_and_duplication_ends_the_same(receipts, rng, repeats):
    """Shuffle the receipts and repeat some of them: the outcome never changes."""
    expected = fold(receipts)
    shuffled = list(receipts) + [receipts[i % len(receipts)] for i in repeats]
    rng.shuffle(shuffled)
    assert fold(shuffled) == expected

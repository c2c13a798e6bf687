"""Every native op against the reference on seeded random cases (``fuzz_cases.py``): a quick
sweep in every run, and 1,000 cases per op in the ``slow`` run (``pytest -m slow --run-slow``,
which CI runs; ``AUTOGAZE_FUZZ_CASES`` changes the count, e.g. under the ASan build). A failure
names the op, seed and variant; ``fuzz_cases.run_case(op, seed)`` replays it."""

from __future__ import annotations

import os

import pytest

from fuzz_cases import OPS, VARIANTS, run_case

QUICK_CASES = 30
FULL_CASES = int(os.environ.get("AUTOGAZE_FUZZ_CASES", "1000"))


def _sweep(op: str, seeds) -> None:
    failures = []
    for seed in seeds:
        try:
            run_case(op, seed)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, f"{len(failures)} failing cases, first: {failures[:3]}"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs(op, variant):
    assert run_case(op, seed=0, variant=variant).startswith(f"{op} seed=0 variant={variant}")


@pytest.mark.parametrize("op", OPS)
def test_fuzz_quick(op):
    _sweep(op, range(1000, 1000 + QUICK_CASES))


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_fuzz_full(op):
    _sweep(op, range(FULL_CASES))


def test_cases_are_reproducible():
    for op in OPS:
        assert run_case(op, 7) == run_case(op, 7)

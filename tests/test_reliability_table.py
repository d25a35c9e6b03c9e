"""When docs/RELIABILITY.md may be rewritten: only after a run that collected the whole suite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import REPO
from reliability import TablePlugin


def plugin(
    args: list[str], ignore: list[str] | None = None, ignore_glob: list[str] | None = None
) -> TablePlugin:
    """The plugin over a stand-in for pytest's config: the invocation is what is under test here."""
    config = SimpleNamespace(
        args=args,
        invocation_params=SimpleNamespace(dir=REPO, args=args),
        option=SimpleNamespace(ignore=ignore, ignore_glob=ignore_glob),
    )
    return TablePlugin(config)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [["tests"], [str(REPO)], ["."]])
def test_a_run_of_all_of_tests_is_whole(args: list[str]) -> None:
    assert plugin(args).whole_suite()


@pytest.mark.parametrize(
    ("args", "ignore", "ignore_glob"),
    [
        (["tests/test_cli.py"], None, None),
        (["tests/test_cli.py::test_data_stage_runs_then_is_skipped"], None, None),
        # An ignored file is never collected, so its reliability rows would silently go missing.
        (["tests"], ["tests/test_e2e.py"], None),
        (["tests"], None, ["*e2e*"]),
    ],
)
def test_a_run_that_leaves_files_out_is_not_whole(
    args: list[str], ignore: list[str] | None, ignore_glob: list[str] | None
) -> None:
    table = plugin(args, ignore, ignore_glob)
    assert not table.whole_suite()
    assert "not a whole-suite run" in table.reasons_not_to_write()

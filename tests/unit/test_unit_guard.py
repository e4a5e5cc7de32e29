"""The unit-test guard (tests/unit/conftest.py) fails a test that leaves Ray initialised.

Runs the real conftest in an inner pytest session with a stand-in ``ray`` module, so
nothing here imports or starts Ray.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).parent / "conftest.py"
FAKE = "_raylane_unit_guard_fake_ray"  # where the inner session finds the stand-in

INNER_TESTS = f'''
import sys


def test_leaves_ray_running():
    sys.modules["ray"] = sys.modules["{FAKE}"]
    sys.modules["ray"].init()


def test_shuts_ray_down_itself():
    sys.modules["ray"] = sys.modules["{FAKE}"]
    sys.modules["ray"].init()
    sys.modules["ray"].shutdown()


def test_never_touches_ray():
    assert True
'''


class FakeRay(types.ModuleType):
    """Just what the guard calls: is_initialized() and shutdown()."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.running = False
        self.shutdowns = 0

    def init(self) -> None:
        self.running = True

    def is_initialized(self) -> bool:
        return self.running

    def shutdown(self) -> None:
        self.running = False
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRay]:
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, FAKE, ray)
    yield ray


def test_guard_fails_only_the_test_that_left_ray_running(
    pytester: pytest.Pytester, fake_ray: FakeRay
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner=INNER_TESTS)

    # the inner session needs no plugin of ours; hypothesis' summary alone costs ~1 s there
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:asyncio"
    )

    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_inner.py::test_leaves_ray_running started Ray; unit tests must not "
            "(move it to tests/e2e)*"
        ]
    )
    errors = [line for line in result.outlines if line.startswith("ERROR ")]
    assert len(errors) == 1 and "test_leaves_ray_running" in errors[0]
    # the guard shut Ray down so the next test starts clean: 1 by the guard, 1 by the test
    assert fake_ray.shutdowns == 2 and not fake_ray.running

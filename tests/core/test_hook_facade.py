"""The typed facade (``host.hooks``) and the spec (hookspecs.py) describe the same hooks, with the same arguments,
and the spec's marks are the only place the calling rules live."""

from __future__ import annotations

import inspect

import pytest

from autotune_core import hookspecs
from autotune_core.hookkinds import STAGES, HookKind, kinds
from autotune_core.hooks import FOLDS, KINDS, REQUEST_SCOPED, Hooks
from autotune_core.markers import PROJECT
from autotune_core.modelinfo import smaller_kv_type

SPEC_MARK = f"{PROJECT}_spec"
SPECS = sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, SPEC_MARK))
#: facade arguments that are not the spec's: which plugins to skip, per-plugin registration callbacks
FACADE_ONLY = {"skip"}
#: spec arguments the facade supplies itself (the fold passes plan/proposal along the fold)
SUPPLIED = {"proposal"}


def test_every_spec_is_marked_with_its_calling_rule() -> None:
    assert set(kinds(hookspecs)) == set(SPECS) == set(KINDS)
    assert all(isinstance(kind, HookKind) for kind in KINDS.values())


def test_the_marks_say_what_the_docs_say() -> None:
    assert {"choose_num_ctx", "choose_kv_type"} == FOLDS
    assert (KINDS["choose_num_ctx"].knob, KINDS["choose_num_ctx"].safest) == ("num_ctx", min)
    assert (KINDS["choose_kv_type"].knob, KINDS["choose_kv_type"].safest) == ("kv_type", smaller_kv_type)
    assert KINDS["choose_num_ctx"].stages == STAGES == ("propose", "snap", "adjust", "guard")
    assert {"pre_request", "choose_num_ctx", "choose_kv_type", "post_response", "on_pressure"} == REQUEST_SCOPED
    assert {name for name, kind in KINDS.items() if kind.may_await} == {
        "pre_request",
        "post_response",
        "on_pressure",
        "on_startup",
        "on_shutdown",
    }


@pytest.mark.parametrize("hook", SPECS)
def test_the_facade_has_one_method_per_hook_with_the_specs_arguments(hook: str) -> None:
    method = getattr(Hooks, hook, None)
    assert method is not None, f"add Hooks.{hook} to autotune_core/hooks.py"
    spec_args = set(inspect.signature(getattr(hookspecs, hook)).parameters) - SUPPLIED
    facade = inspect.signature(method).parameters
    facade_args = {name for name in facade if name != "self"} - FACADE_ONLY
    assert facade_args == spec_args
    assert all(facade[name].kind is inspect.Parameter.KEYWORD_ONLY for name in facade_args)
    assert inspect.iscoroutinefunction(method) == KINDS[hook].may_await


def test_the_facade_has_nothing_the_spec_does_not() -> None:
    public = {name for name in vars(Hooks) if not name.startswith("_")}
    assert public == set(SPECS)

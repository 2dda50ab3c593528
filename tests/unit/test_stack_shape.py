"""`make up` keeps the shape of a running stack (tools.stack._shape): an
option left out comes from it, a different one is refused, and a stack that
no longer runs leaves nothing behind to inherit."""

from __future__ import annotations

import argparse
import json

import pytest

from tools import stack


def _asked(replicas=None, cluster=None, standby=None) -> argparse.Namespace:
    return argparse.Namespace(replicas=replicas, cluster=cluster, standby=standby)


@pytest.fixture
def shape_file(tmp_path, monkeypatch):
    path = tmp_path / "shape.json"
    monkeypatch.setattr(stack, "SHAPE", path)
    return path


def _running(monkeypatch, running: bool) -> None:
    monkeypatch.setattr(stack, "_pid_of", lambda name: 4242 if running and name == "geo" else None)


def test_nothing_running_takes_what_is_asked_and_the_defaults(shape_file, monkeypatch):
    _running(monkeypatch, False)
    shape_file.write_text(json.dumps({"replicas": 2, "cluster": True, "standby": True}))
    assert stack._shape(_asked(standby=True)) == {"replicas": 1, "cluster": False, "standby": True}


def test_a_running_stack_lends_what_is_left_out(shape_file, monkeypatch):
    _running(monkeypatch, True)
    shape_file.write_text(json.dumps({"replicas": 2, "cluster": False, "standby": True}))
    assert stack._shape(_asked()) == {"replicas": 2, "cluster": False, "standby": True}
    assert stack._shape(_asked(replicas=2, cluster=False)) == {
        "replicas": 2, "cluster": False, "standby": True,
    }  # fmt: skip


def test_a_running_stack_of_another_shape_is_not_changed(shape_file, monkeypatch):
    _running(monkeypatch, True)
    shape_file.write_text(json.dumps({"replicas": 2, "cluster": False, "standby": True}))
    refused = stack._shape(_asked(standby=False))
    assert isinstance(refused, str) and "standby=True" in refused and "make down" in refused
    assert isinstance(stack._shape(_asked(replicas=1)), str)

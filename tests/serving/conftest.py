"""Fixtures for the model server tests (helpers and the test model: serving_testlib.py)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest


def _import_testlib():
  """Registers serving_testlib (next to this file) so test modules can `import serving_testlib`:
  pytest runs with --import-mode=importlib, which puts no test directory on sys.path."""
  name = "serving_testlib"
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


lib = _import_testlib()

from serving import server_lib  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture(scope="session")
def model_template(tmp_path_factory) -> str:
  """The test SavedModel, saved once per session; copy it with lib.Versions.add()."""
  return lib.save_template(str(tmp_path_factory.mktemp("template") / "model"))


@pytest.fixture(scope="module")
def served(model_template, tmp_path_factory):
  """One server per test module: model "half" with version 1 (with warm-up records)."""
  base = str(tmp_path_factory.mktemp("half") / "half")
  versions = lib.Versions(model_template, base)
  versions.add(1, warmup=lib.good_warmup_logs())
  server = server_lib.Server(lib.options(model_name=lib.MODEL, model_base_path=base)).start()
  clients = lib.Clients(server)
  yield server, clients, versions
  clients.close()
  server.stop()

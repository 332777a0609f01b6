"""A pytest plugin for running the Kubernetes Python client's own e2e tests (test data in
tests/data/kubernetes-client-e2e) unmodified, from outside.

Upstream, they live inside the ``kubernetes`` package (``kubernetes.e2e_test``,
``kubernetes.aio.e2e_test``) and import themselves from there; the installed client ships
without them. Loaded with ``-p`` by tests/integration/test_python_client_e2e.py, this adds
the data directory to the installed packages' ``__path__``, so that those imports find the
copies. The run's working directory is the data directory (test_utils.py opens its YAML
files by paths relative to it).
"""

from __future__ import annotations

import pathlib

import kubernetes
import kubernetes.aio

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "kubernetes-client-e2e"

for package, folder in (
    (kubernetes, DATA / "kubernetes"),
    (kubernetes.aio, DATA / "kubernetes" / "aio"),
):
    if str(folder) not in package.__path__:
        package.__path__.append(str(folder))

"""Pytest fixtures for the test Kubernetes API server (register via `pytest_plugins`).

- `kube_server`: a started `KubeServer` on 127.0.0.1 (free port), authorizing the
  controller's ServiceAccount by manifests/base/rbac.yaml; stopped after the test.
- `kube_client`: an official-client `ApiClient` with the controller's token (RBAC applies).
- `kube_admin_client`: an `ApiClient` with the admin token (for test setup).
- `make_kube_client`: `make_kube_client(token)` -> `ApiClient`, closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import kubernetes.client
import pytest

from tests.kubeserver import ADMIN_TOKEN, CONTROLLER_TOKEN, DEFAULT_RBAC_PATH, KubeServer


@pytest.fixture
def kube_server() -> Iterator[KubeServer]:
    if not DEFAULT_RBAC_PATH.is_file():
        pytest.fail(f"{DEFAULT_RBAC_PATH} is missing: the test API server authorizes the "
                    "controller only by the project's RBAC manifest")
    server = KubeServer(DEFAULT_RBAC_PATH).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_kube_client(
    kube_server: KubeServer,
) -> Iterator[Callable[[str], kubernetes.client.ApiClient]]:
    made: list[kubernetes.client.ApiClient] = []

    def make(token: str) -> kubernetes.client.ApiClient:
        made.append(kube_server.client(token))
        return made[-1]

    yield make
    for api_client in made:
        api_client.close()


@pytest.fixture
def kube_client(make_kube_client: Callable[[str], kubernetes.client.ApiClient],
                ) -> kubernetes.client.ApiClient:
    return make_kube_client(CONTROLLER_TOKEN)


@pytest.fixture
def kube_admin_client(make_kube_client: Callable[[str], kubernetes.client.ApiClient],
                      ) -> kubernetes.client.ApiClient:
    return make_kube_client(ADMIN_TOKEN)

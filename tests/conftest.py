"""Test-session setup: no network beyond loopback, a private Hugging Face cache, small deterministic models."""

from __future__ import annotations

import os
import socket
import tempfile

# huggingface_hub reads these once, at import: set them before anything imports it.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="occfeat-test-hf-"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from occfeat.models.geometry import nuscenes_camera_rig  # noqa: E402

# Under pytest-xdist each worker is a process whose torch would take one thread per core: WORKERS x cores threads
# on the cores. Each worker takes its share instead (on 2 cores, two one-thread processes train 1.25x faster than
# one two-thread process: bench/workers.py). Child processes that tests start set their own (OMP_NUM_THREADS).
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _XDIST_WORKERS))


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _loopback_only(connect):  # type: ignore[no-untyped-def]
    def guarded(sock: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _LOOPBACK:
            raise RuntimeError(f"a test tried to connect to {address!r}: tests never leave 127.0.0.1 (pass endpoint= "
                               "a loopback HubServer, and never rely on the network).")
        return connect(sock, address, *args, **kwargs)

    return guarded


@pytest.fixture(autouse=True, scope="session")
def _no_network_beyond_loopback():
    """Any socket connection outside 127.0.0.1 / ::1 fails the test that makes it. (Child processes are not
    guarded: the tests that start them give them loopback endpoints.)"""
    originals = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = _loopback_only(originals[0])  # type: ignore[method-assign]
    socket.socket.connect_ex = _loopback_only(originals[1])  # type: ignore[method-assign]
    yield
    socket.socket.connect, socket.socket.connect_ex = originals  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of many small ops: as fast as two on tiny tensors, and no stalls (spinning
    OpenMP threads) when other processes share the 2 cores; also makes child processes' results comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(image_hw: tuple[int, int], batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Random images on the nominal nuScenes rig, for a model configured at ``image_hw``."""
    intrinsics, cam_to_ego = nuscenes_camera_rig(image_hw)
    n = intrinsics.shape[0]
    return dict(
        images=torch.randn(batch_size, n, 3, *image_hw),
        intrinsics=intrinsics.expand(batch_size, -1, -1, -1).clone(),
        cam_to_ego=cam_to_ego.expand(batch_size, -1, -1, -1).clone(),
    )


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory):
    """One tiny procedural nuScenes-format dataroot shared by the data tests: 2 scenes x 3 key frames, 90x160."""
    from occfeat.synthetic import generate_world

    return generate_world(
        tmp_path_factory.mktemp("world"), scenes=2, samples_per_scene=3, image_hw=(90, 160), seed=0, progress=False
    )

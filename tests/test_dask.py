"""Batch inference over a Dask array on a local dask.distributed cluster (worker processes, loopback only)."""
import numpy as np
import pytest

from numbaconv.network import Network

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, worker_dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_distributed_batch_inference_equals_single_process(client, rng):
    from numbaconv.dask import predict
    net = Network.from_catalogue("shufflenet_v2", width=0.5, resolution=32, batch=4)
    images = rng.standard_normal((10, 3, 32, 32)).astype(np.float32)
    lazy = predict(net, da.from_array(images, chunks=(4, 3, 32, 32)))  # chunks of 4, 4 and 2
    assert lazy.shape == (10, 1000) and lazy.chunks[0] == (4, 4, 2)
    result = lazy.compute()
    expected = net(images)  # one process, one batch
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    assert len(client.scheduler_info()["workers"]) == 2


def test_predict_checks_its_input():
    from numbaconv.dask import predict
    net = Network.from_catalogue("shufflenet_v2", width=0.5, resolution=32)
    with pytest.raises(TypeError, match="dask array"):
        predict(net, np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        predict(net, da.zeros((2, 3, 16, 16), chunks=1))

"""The distributed DSP loss: 2 gloo processes on halves of a batch give the loss of one process on the whole."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dsp_reference import KINDS_2D, TYPES, random_batch

from dsp_monai.losses import DSPLoss, dsp_loss

CLASSES, DIM, PROTOTYPES, TEMPERATURE = 4, 6, 3, 0.5
SPATIAL = (5, 7)
SPLIT = 3  # rank 0 takes images [0, 3), rank 1 the rest: the ranks' batches differ in size
WORLD = 2


def _case():
    records = random_batch(7, SPATIAL, CLASSES, KINDS_2D)
    generator = torch.Generator().manual_seed(7)
    embeddings = torch.randn(len(records), DIM, *SPATIAL, generator=generator, dtype=torch.float64)
    prototypes = torch.randn(CLASSES, PROTOTYPES, DIM, generator=generator, dtype=torch.float64)
    return records, embeddings, prototypes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, port, folder):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        records, embeddings, prototypes = _case()
        part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        results = {}
        group = dist.new_group([0, 1])
        options = {"default": lambda *args: dsp_loss(*args, distributed=True), "group": DSPLoss(distributed=group)}
        for option, loss_fn in options.items():
            local_embeddings = embeddings[part].clone().requires_grad_()
            local_prototypes = prototypes.clone().requires_grad_()
            out = loss_fn(local_embeddings, local_prototypes, TEMPERATURE, records[part])
            out["total"].backward()
            results[option] = {
                "terms": {name: out[name].detach() for name in (*TYPES, "total")},
                "log_z": out["log_z"].detach(),
                "grad_embeddings": local_embeddings.grad,
                "grad_prototypes": local_prototypes.grad,
            }
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_compute_the_loss_and_gradients_of_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]

    records, embeddings, prototypes = _case()
    embeddings.requires_grad_()
    prototypes.requires_grad_()
    single = dsp_loss(embeddings, prototypes, TEMPERATURE, records)
    single["total"].backward()

    for option in ("default", "group"):
        for rank, result in enumerate(ranks):
            for name in (*TYPES, "total"):
                torch.testing.assert_close(result[option]["terms"][name], single[name].detach(), rtol=0, atol=1e-9)
            torch.testing.assert_close(result[option]["log_z"], single["log_z"].detach(), rtol=0, atol=1e-9)
        # every rank's gradient is WORLD times its share (DistributedDataParallel then averages over the ranks)
        local = torch.cat([result[option]["grad_embeddings"] for result in ranks]) / WORLD
        torch.testing.assert_close(local, embeddings.grad, rtol=0, atol=1e-9)
        averaged = sum(result[option]["grad_prototypes"] for result in ranks) / WORLD
        torch.testing.assert_close(averaged, prototypes.grad, rtol=0, atol=1e-9)

"""Run under ``mpiexec -n K python tests/mpi_driver.py MODE ...`` by tests/test_mpi.py.

cli ARGS...          ``minseg ARGS``, each rank writing its process id to $MINSEG_PID_DIR/rank<r> first
fail-on-rank-1 ARGS  the same, but rank 1's second training step raises (a bug on one rank only)
equivalence OUT      test_data_parallel's runs on MPI ranks; rank 0 saves weights and metrics to OUT (.npz)
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cli(argv):
    from minseg.app import cli
    from minseg.distributed import MPICommunicator
    folder = os.environ.get("MINSEG_PID_DIR")
    if folder:
        (Path(folder) / f"rank{MPICommunicator().rank}").write_text(str(os.getpid()))
    return cli.main(argv)


def fail_on_rank_1(argv):
    from minseg.distributed import MPICommunicator
    from minseg.train import Learner
    if MPICommunicator().rank == 1:
        original, calls = Learner.train_step, []

        def failing(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("a bug on rank 1")
            return original(self, *args, **kwargs)
        Learner.train_step = failing
    return cli(argv)


def equivalence(out):
    from test_data_parallel import ColourDataset, paper_unet, resnet_fcn, train_and_evaluate

    import minseg.distributed
    comm = minseg.distributed.MPICommunicator()
    results = {}
    for name, make_model, size, batch in (("unet", paper_unet, (8, 8), 4), ("fcn", resnet_fcn, (32, 32), 3)):
        data = ColourDataset(11 if name == "unet" else 5, size, seed=1), ColourDataset(7, size, seed=2)
        (weights, metrics, history), = train_and_evaluate(make_model, None, data, batch_size=batch, comm=comm)
        results.update({f"{name}/{key}": value for key, value in weights.items()})
        results[f"{name}/confusion_matrix"] = metrics["confusion_matrix"]
        results[f"{name}/train_loss"] = np.array(history[-1]["train_loss"])
    if comm.rank == 0:
        np.savez(out, **results)
    return 0


if __name__ == "__main__":
    mode, arguments = sys.argv[1], sys.argv[2:]
    sys.exit({"cli": cli, "fail-on-rank-1": fail_on_rank_1, "equivalence": lambda a: equivalence(a[0])}[mode](
        arguments))

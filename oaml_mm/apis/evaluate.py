"""Evaluate a checkpoint on a config's test sets: what ``tools/test.py`` runs.

:func:`evaluate_checkpoint` builds the config's runner on the checkpoint, refuses
one that loads only partly, runs the test loop and, on rank 0, prints the table and
writes the CSV, the ROC plots (:func:`~oaml_mm.evaluation.report_test_results`) and
the ``--out`` JSON (:func:`write_metrics_json`). See docs/evaluation.md.
"""
import json
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.config import Config

from oaml_mm.evaluation import report_test_results
from oaml_mm.models.heads import without_sharded_head
from oaml_mm.utils import check_output_file
from .runner_setup import build_runner, check_loaded_checkpoint

__all__ = ['check_metric_outputs', 'write_metrics_json', 'evaluate_checkpoint']


def check_metric_outputs(out: Optional[str]) -> None:
    """Refuse an unwritable ``--out`` before the evaluation, whose results it loses.

    Args:
        out (str, optional): The JSON path; its CSV goes next to it
            (``<out without extension>.csv``). None checks nothing.

    Raises:
        OutputPathError: Either file cannot be written (a directory, a missing
            or read-only folder), naming the path.
    """
    if out:
        check_output_file(out, '--out')
        check_output_file(osp.splitext(out)[0] + '.csv',
                          'the CSV next to --out')


def write_metrics_json(metrics: Dict[str, object], out: str) -> None:
    """Write ``metrics`` as sorted, indented JSON; numbers as floats.

    Args:
        metrics (dict): ``{dataset}/{branch}/{metric}`` values.
        out (str): Destination; its folder is created.
    """
    data = {k: (float(v) if isinstance(v, (int, float)) else v)
            for k, v in metrics.items()}
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)


def evaluate_checkpoint(cfg: Config, checkpoint: str,
                        out: Optional[str] = None) -> Dict[str, float]:
    """Test ``checkpoint`` with ``cfg``'s test loop; report on rank 0.

    Testing never uses the margin head: a sharded one (``PartialFCHead``),
    which would hold every class centre in each process, is not built.

    Args:
        cfg (Config): A config with ``test_dataloader``, ``test_evaluator``,
            ``test_cfg`` and ``work_dir`` (:func:`~.prepare_config`); its
            ``load_from``, ``resume`` and ``model`` are set here.
        checkpoint (str): The checkpoint file.
        out (str, optional): Also write the metrics as JSON there and the CSV
            next to it (else ``metrics.csv`` in the work dir); check it first
            with :func:`check_metric_outputs`.

    Returns:
        dict: ``{dataset}/{branch}/{metric}`` -> value (AUC, accuracy, EER
        in percent; thresholds in their branch's unit).

    Raises:
        CheckpointError: The checkpoint is not one or loads only partly.
        pickle.UnpicklingError: It holds objects other than weights.
        OAMLError: From the data sets and metrics (bad files, named).
    """
    cfg.load_from = checkpoint
    cfg.resume = False
    cfg.model = without_sharded_head(cfg.model)
    runner = build_runner(cfg)
    check_loaded_checkpoint(runner, checkpoint)
    metrics = runner.test()
    if runner.rank == 0:
        # Table on stdout, CSV, ROC PNGs (work dir + visualizer backends).
        report_test_results(metrics, runner.work_dir,
                            runner.test_loop.evaluator.metrics,
                            runner.visualizer, out)
        if out:
            write_metrics_json(metrics, out)
            print(f'metrics written to {out}')
    return metrics

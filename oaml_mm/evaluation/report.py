"""What ``tools/test.py`` shows the user: a table, a CSV and ROC curves.

Metric keys are ``{dataset}/{branch}/{metric}``; the table has one row per
(dataset, branch) and one column per metric. ROC curves come from the face metrics'
``roc_curves`` (all branches of a data set on one plot, log-FAR axis) and go to the
work dir as PNG and to the runner's visualizer backends (TensorBoard) as images.
"""
import csv
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

__all__ = ['format_table', 'write_csv', 'plot_roc', 'report_test_results',
           'COLUMN_NOTES']


def _split(metrics: Dict[str, float]):
    rows: Dict[Tuple[str, str], Dict[str, float]] = {}
    cols: List[str] = []
    for key, value in metrics.items():
        parts = key.split('/')
        if len(parts) != 3:
            continue
        ds, br, m = parts
        rows.setdefault((ds, br), {})[m] = value
        if m not in cols:
            cols.append(m)
    return rows, cols


#: What the columns whose unit is not obvious hold; printed under the table.
COLUMN_NOTES = {
    'threshold_cos': 'mean best 10-fold threshold, cosine similarity of the '
                     'embeddings (accept when above)',
    'threshold_qaconv': 'mean best 10-fold threshold, QAConv score (accept '
                        'when above)',
    'threshold_fused': 'mean best 10-fold threshold, fused z-score (accept '
                       'when above)',
    'threshold_fused_vis': 'mean best 10-fold threshold, log-odds of the '
                           'visibility-aware fusion (accept when above)',
    'nonfinite_features': 'images/templates with NaN or Inf features: the '
                          'row is NaN, not a result',
    'nonfinite_scores': 'pairs with a NaN or Inf score: the row is NaN, not '
                        'a result',
}


def format_table(metrics: Dict[str, float]) -> str:
    """A text table: one row per (dataset, branch), one column per metric.

    Columns listed in :data:`COLUMN_NOTES` (thresholds, each in its branch's
    unit; counts of non-finite inputs) are explained under the table.
    """
    rows, cols = _split(metrics)
    head = ['dataset', 'branch'] + cols
    body = [[ds, br] + [
        '' if c not in vals else f'{float(vals[c]):.4f}' for c in cols
    ] for (ds, br), vals in rows.items()]
    widths = [max(len(str(r[i])) for r in [head] + body)
              for i in range(len(head))]
    line = lambda r: '  '.join(str(x).rjust(w) for x, w in zip(r, widths))  # noqa
    notes = [f'{c}: {COLUMN_NOTES[c]}' for c in cols if c in COLUMN_NOTES]
    return '\n'.join([line(head), line(['-' * w for w in widths])] +
                     [line(r) for r in body] + notes)


def write_csv(metrics: Dict[str, float], path: str) -> None:
    """Write the table as CSV (columns: dataset, branch, then the metrics)."""
    rows, cols = _split(metrics)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['dataset', 'branch'] + cols)
        for (ds, br), vals in rows.items():
            w.writerow([ds, br] + [vals.get(c, '') for c in cols])


def plot_roc(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], title: str,
             path: str) -> np.ndarray:
    """Plot every branch's ROC on one log-FAR axis, save a PNG, return RGB pixels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for branch, (fpr, tpr) in curves.items():
        keep = fpr > 0
        ax.plot(fpr[keep], 100 * tpr[keep], label=branch)
    ax.set_xscale('log')
    ax.set_xlabel('FAR')
    ax.set_ylabel('TAR (%)')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def report_test_results(metrics: Dict[str, float],
                        work_dir: str,
                        metric_objects: Iterable = (),
                        visualizer=None,
                        out: Optional[str] = None) -> Dict[str, str]:
    """Print the table and write the CSV and ROC PNGs (call on rank 0).

    Args:
        metrics (dict): ``{dataset}/{branch}/{metric}`` values.
        work_dir (str): Where the CSV (``metrics.csv``) and PNGs go.
        metric_objects (Iterable): The evaluator's metrics; those with
            ``roc_curves`` get a plot each.
        visualizer: A mmengine visualizer; the plots are added with ``add_image``
            (TensorBoard when its backend is configured).
        out (str, optional): The ``--out`` JSON path; the CSV goes next to it.

    Returns:
        dict: Paths written (``csv``, ``roc_<dataset>``).
    """
    print(format_table(metrics))
    paths = {}
    csv_path = (osp.splitext(out)[0] + '.csv') if out else \
        osp.join(work_dir, 'metrics.csv')
    write_csv(metrics, csv_path)
    paths['csv'] = csv_path
    for m in metric_objects:
        curves = getattr(m, 'roc_curves', None)
        if not curves:
            continue
        name = getattr(m, 'dataset_name', type(m).__name__)
        png = osp.join(work_dir, f'roc_{name}.png')
        img = plot_roc(curves, f'ROC {name}', png)
        paths[f'roc_{name}'] = png
        if visualizer is not None:
            visualizer.add_image(f'roc_{name}', img)
    return paths

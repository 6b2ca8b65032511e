"""Figures of a model's evaluation and of a drift report: data in, matplotlib figure out.

The caller logs and closes them (stellar_mlflow.runs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import auc, precision_recall_curve, roc_curve  # noqa: E402

from stellar_core.contract import CLASSES  # noqa: E402
from stellar_core.features import FEATURE_NAMES  # noqa: E402
from stellar_core.training import Evaluation  # noqa: E402


def confusion_figure(evaluation: Evaluation, title: str):
    matrix = np.asarray(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig


def curve_figures(probabilities: np.ndarray, labels: np.ndarray):
    """One-vs-rest ROC and precision-recall curves, one line per class present in the test set."""
    roc_fig, roc_ax = plt.subplots(figsize=(5, 4))
    pr_fig, pr_ax = plt.subplots(figsize=(5, 4))
    for k, cls in enumerate(CLASSES):
        positives = labels == k
        if not 0 < positives.sum() < len(labels):
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
        roc_ax.plot(fpr, tpr, label=f"{cls} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(positives, probabilities[:, k])
        pr_ax.plot(recall, precision, label=cls)
    roc_ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall, one vs rest")
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="lower left")
    roc_fig.tight_layout()
    pr_fig.tight_layout()
    return roc_fig, pr_fig


def importance_figure(importance: dict[str, float]):
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("share of total gain")
    ax.set_title("feature importance")
    fig.tight_layout()
    return fig


def distribution_figure(reference: pd.DataFrame, current: pd.DataFrame, report: dict, title: str,
                        panels: int = 7):
    """Reference vs current density of the most-shifted features (drifted ones in red) and the class mix.
    Only the `panels` largest shifts (Wasserstein, drifted first) are drawn: the JSON has every feature."""
    drifted = set(report.get("drifted_features", []))
    ranked = sorted(report.get("features") or [{"feature": f} for f in FEATURE_NAMES],
                    key=lambda f: (f["feature"] not in drifted, -(f.get("wasserstein_sd") or 0.0)))
    shown = [f["feature"] for f in ranked[:panels]]
    fig, axes = plt.subplots(2, 4, figsize=(11, 5), dpi=72)
    for ax, name in zip(axes.flat, shown):
        ref, cur = reference[name].dropna().to_numpy(), current[name].dropna().to_numpy()
        both = np.concatenate([ref, cur]) if len(cur) else ref
        low, high = np.quantile(both, [0.005, 0.995]) if len(both) else (0, 1)
        bins = np.linspace(low, high if high > low else low + 1, 30)
        # Step outlines, not bar patches: one artist per curve keeps the figure fast to draw.
        for values, label, colour in ((ref, "reference", "tab:blue"),
                                      (cur, "current", "tab:red" if name in drifted else "tab:orange")):
            if len(values):
                density, _ = np.histogram(values, bins=bins, density=True)
                ax.stairs(density, bins, fill=label == "reference", alpha=0.5 if label == "reference" else 1.0,
                          label=label, color=colour)
        ax.set_title(name + (" (drift)" if name in drifted else ""), fontsize=9, color="red" if name in drifted else "black")
        ax.tick_params(labelsize=7)
    mix_ax = axes.flat[-1]
    prediction = report.get("prediction", {})
    for offset, (label, key) in enumerate((("reference", "reference_shares"), ("current", "shares"))):
        shares = prediction.get(key) or {}
        mix_ax.bar(np.arange(len(CLASSES)) + offset * 0.4, [shares.get(c, 0) for c in CLASSES], width=0.4, label=label)
    mix_ax.axhline(0.9, color="grey", linestyle=":")
    mix_ax.axhline(0.1, color="grey", linestyle=":")
    mix_ax.set_xticks(np.arange(len(CLASSES)) + 0.2, CLASSES, fontsize=8)
    mix_ax.set_title("predicted class mix", fontsize=9)
    mix_ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown):-1]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

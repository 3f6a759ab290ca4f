"""Report sections of what happened around training: tuning, compression, federation, privacy."""

from __future__ import annotations

from dlab.report import plots
from dlab.report.context import ReportContext
from dlab.report.html import escape, figure, note, number, table
from dlab.report.sections import section


@section("tuning", "Hyper-parameter search", 50)
def tuning(ctx: ReportContext) -> str | None:
    summary_ = ctx.meta.get("tuning")
    if not summary_:
        return None
    trials = summary_["trials"]
    states = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    parts = [
        f"<p>Optuna study <b>{escape(summary_['study'])}</b> ({escape(summary_['storage'])}): {len(trials)} trials, "
        f"{states['COMPLETE']} completed, {states['PRUNED']} pruned, {states['FAIL']} failed. This run trained the best "
        f"parameters ({escape(summary_['metric'])} {summary_['best_value']:.4g}, {escape(summary_['direction'])}).</p>",
        table(
            [
                [k, v if isinstance(v, int | float) else str(v)]
                for k, v in summary_["best_params"].items()
            ],
            ["parameter", "best value"],
        ),
        '<div class="row">'
        + figure(
            plots.tuning_figure(trials, summary_["direction"], summary_["metric"]), "tuning history"
        ),
    ]
    if summary_.get("importances"):
        parts.append(
            figure(plots.importance_figure(summary_["importances"]), "parameter importances")
        )
    else:
        parts.append(note("too few completed trials to estimate parameter importances"))
    return "".join(parts) + "</div>"


@section("compression", "Compression", 45)
def compression(ctx: ReportContext) -> str | None:
    details = ctx.meta.get("compression")
    if not details:
        return None
    method = details["method"]
    what = {
        "quantize": f"int8 quantization ({details.get('mode')}; quantized layers: {details.get('quantized_layers')})",
        "distill": f"knowledge distillation from {details.get('teacher')} (α {details.get('alpha')}, temperature {details.get('temperature')})",
        "prune": f"{'structured (channels/units)' if details.get('structured') else 'unstructured global magnitude'} pruning of "
        f"{details.get('amount', 0):.0%}, fine-tuned {details.get('finetune_epochs')} epochs; {details.get('nonzero_weights', 1):.1%} of weights non-zero",
    }[method]
    rows = [
        [
            r["model"],
            r["accuracy"],
            r["size_bytes"] / 1e6,
            r["parameters"],
            r["batch1_p50_ms"],
            r["batch64_p50_ms"],
        ]
        for r in details["comparison"]
    ]
    size_note = " (gzip-compressed)" if details.get("size") == "gzip-compressed state" else ""
    columns = [
        "model",
        "accuracy",
        f"size MB{size_note}",
        "parameters",
        "latency batch 1 (ms, p50)",
        "latency batch 64 (ms, p50)",
    ]
    return (
        f"<p>{escape(what)}, from {escape(ctx.meta.get('compressed_from', '?'))}. Measured side by side in one process on this machine's CPU.</p>"
        + table(rows, columns)
    )


def _last_round_clients(last: dict, settings: dict) -> str:
    """Each client of the last round: its samples, local accuracy, the global model on its data."""
    local = {r["client"]: r for r in last.get("clients_evaluate", [])}
    rows = [
        [
            r["client"],
            settings.get("client_samples", [None] * (r["client"] + 1))[r["client"]],
            r.get("train_accuracy"),
            local.get(r["client"], {}).get("accuracy"),
        ]
        for r in last.get("clients_train", [])
    ]
    if not rows:
        return ""
    columns = ["client", "samples", "local train accuracy", "global model on its own data"]
    return f"<p>Clients in round {last['epoch']}:</p>" + table(rows, columns)


@section("federated", "Federated learning", 46)
def federated(ctx: ReportContext) -> str | None:
    settings = ctx.meta.get("federated")
    log = ctx.path / "federated.jsonl"
    if not settings or not log.is_file():
        return None
    import json

    rounds = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    skew = f"Dirichlet(α={settings['alpha']})" if settings.get("alpha") else "IID"
    central = ctx.meta.get("central")
    parts = [
        f"<p>Flower {escape(settings['strategy'])} over {settings['clients']} clients "
        f"({escape(skew)} partitions of {number(sum(settings.get('client_samples', [])))} samples), "
        f"{settings['rounds']} rounds of {settings['local_epochs']} local epoch(s), "
        f"{settings['fraction']:.0%} of clients per round. Global accuracy is measured on the "
        "validation split after each round (round 0: the initial model).</p>"
    ]
    series = {"federated": ([r["epoch"] for r in rounds], [r["val_accuracy"] for r in rounds])}
    if central and central.get("accuracy") is not None:
        xs = [0, rounds[-1]["epoch"]]
        series[f"centralised ({central['epochs']} epochs, {central['split']})"] = (
            xs,
            [central["accuracy"]] * 2,
        )
    parts.append(
        figure(
            plots.curves_figure(series, "global accuracy per round", "round"),
            "global accuracy per round",
        )
    )
    rows = [
        [r["epoch"], r["val_accuracy"], r["val_loss"], r.get("train_loss"), r.get("epsilon")]
        for r in rounds
    ]
    columns = ["round", "global accuracy", "global loss", "client train loss", "client ε"]
    keep = [i for i, c in enumerate(columns) if any(row[i] is not None for row in rows)]
    parts.append(table([[row[i] for i in keep] for row in rows], [columns[i] for i in keep]))
    parts.append(_last_round_clients(rounds[-1], settings))
    if central:
        parts.append(
            note(
                f"centralised training of the same recipe: accuracy {central['accuracy']:.4f} on "
                f"its {central['split']} split ({central['run']})"
            )
        )
    return "".join(parts)


@section("privacy", "Differential privacy", 47)
def privacy(ctx: ReportContext) -> str | None:
    spent = ctx.meta.get("privacy")
    if not spent:
        return None
    budget = ctx.recipe.train.privacy
    epochs = [r for r in ctx.epochs if "epsilon" in r]
    parts = [
        f"<p>DP-SGD through Opacus: per-sample gradients clipped to {budget.max_grad_norm:g}, "
        f"Gaussian noise ×{spent['noise_multiplier']:.3f}, Poisson-sampled batches. Spent "
        f"ε = {spent['epsilon_spent']:.3f} of a budget of {budget.epsilon:g} at δ = {spent['delta']:g} "
        f"({escape(spent['accountant'])} accountant).</p>"
    ]
    if epochs:
        parts.append(
            figure(
                plots.curves_figure(
                    {"ε spent": ([r["epoch"] for r in epochs], [r["epsilon"] for r in epochs])},
                    "privacy spent",
                    "epoch",
                ),
                "privacy spent per epoch",
            )
        )
    return "".join(parts)

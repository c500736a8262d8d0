"""The Gradio page of `mft app`: five tabs over the handlers (handlers.py), and `serve`, which runs it.

Tabs: Models (what can be loaded; add a folder, scan a results root), Try it (one text → label, confidence
per class, latency, parameter counts), Batch (a CSV → metrics, latency, predictions to download), Inspect (a
results folder's heatmap, curves and tables) and Compare (two models on one text and on one CSV).

Every event catches the engine's errors and shows them in its tab's status line (element id `*_status`),
so bad input is read where the user looks and the server keeps serving. Gradio is imported here only:
the handlers run without it. Element ids are stable: the browser test finds the page's parts by them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import MftError
from .handlers import compare_batch, compare_text, inspect_folder, predict_batch, predict_text
from .sources import AppInputError, find_folders
from .store import ModelStore
from .tables import LABEL_NAMES, PAIR_NAMES, TEXT_NAMES, default_column, read_table

log = logging.getLogger("mft_engine")

#: Largest upload the server accepts at all; the Batch tab refuses files over tables.MAX_TABLE_BYTES
#: itself, with a message in the page (gradio's own refusal would be a transient notice).
SERVER_MAX_FILE_SIZE = "32mb"

CSS = """
.mft-status p { font-size: 1.02em; }
.mft-status .error, .mft-status strong:first-child { color: #b42318; }
footer { display: none !important; }
"""


def error_text(e: BaseException) -> str:
    """The status line for an error: bad input (MftError) as its one line; anything else as its type and
    first line, logged with its traceback (a bug, but the server keeps serving)."""
    if isinstance(e, MftError):
        return f"**Error:** {e}"
    log.exception("app: unexpected error")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"**Error:** internal error ({type(e).__name__}{': ' + first if first else ''})"


def _fmt_int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "—"


def counts_markdown(counts: dict[str, Any]) -> str:
    """The parameter counts of a Classifier as a Markdown table."""
    return ("| total parameters | trainable (fine-tuning) | zeroed | stored bytes |\n|---|---|---|---|\n"
            f"| {_fmt_int(counts.get('total'))} | {_fmt_int(counts.get('trainable'))} | "
            f"{_fmt_int(counts.get('zeroed'))} | {_fmt_int(counts.get('stored_bytes'))} |")


def prediction_markdown(p) -> str:
    """A TextPrediction as the headline the Try-it tab shows: label, confidence, latency."""
    conf = f"confidence **{100 * p.confidence:.1f}%**" if p.confidence is not None else "regression score"
    return f"### {p.label}\n{conf} · latency **{p.latency_ms:.1f} ms** · model: {p.model}"


def metrics_markdown(r) -> str:
    """A BatchResult's figures as Markdown: accuracy, F1, MCC, recall per class, latency."""
    m = r.metrics
    lines = [f"**{r.n:,} rows** · model: {r.model}", ""]
    if "accuracy" in m:
        recall = ", ".join(f"{k} {v:.3f}" for k, v in m["recall_per_class"].items())
        lines += [f"accuracy **{m['accuracy']:.4f}** · F1 {m['f1']:.4f} · MCC {m['mcc']:.4f}",
                  f"recall per class: {recall}"]
    elif "pearson" in m:
        lines.append(f"Pearson **{m['pearson']:.4f}** · Spearman {m['spearman']:.4f} · MSE {m['mse']:.4g}")
    else:
        lines.append("no label column chosen: predictions only")
    lines.append(f"latency per example: mean **{r.mean_ms:.2f} ms** · p95 {r.p95_ms:.2f} ms")
    return "\n\n".join(lines)


def build_app(store: ModelStore, roots: list[str | Path] = ()):
    """The gr.Blocks page over `store`; `roots` are the folders the pickers scan for results folders.

    Cost: building the page only; no model is loaded until a tab asks for it.
    """
    import gradio as gr

    def model_choices():
        """The model pickers' (label, key) list, read fresh from the store."""
        return store.choices()

    def inspect_choices() -> list[tuple[str, str]]:
        """Results folders under the scan roots, for the Inspect picker (model folders left out)."""
        seen, out = set(), []
        for root in roots:
            for info in find_folders(root):
                if info.kind != "checkpoint" and str(info.path) not in seen:
                    seen.add(str(info.path))
                    out.append((f"{info.kind} · {info.path.name}", str(info.path)))
        return out

    def models_table() -> list[list[str]]:
        """Rows of the Models tab's table: picker label and source folder."""
        return [[label, key.rsplit("::", 1)[0]] for label, key in store.choices()]

    choices = model_choices()
    first = choices[0][1] if choices else None
    second = choices[1][1] if len(choices) > 1 else first

    def model_dropdown(elem_id: str, label: str, value):
        """A model picker over the current choices."""
        return gr.Dropdown(choices=choices, value=value, label=label, elem_id=elem_id, scale=3)

    def status(elem_id: str):
        """A tab's status line, where its errors are shown."""
        return gr.Markdown("", elem_id=elem_id, elem_classes=["mft-status"])

    with gr.Blocks(title="mft app", analytics_enabled=False) as demo:
        gr.Markdown("## mft_engine — see, try and compare masked and fine-tuned models")
        with gr.Tabs():
            with gr.Tab("Models", id="models"):
                gr.Markdown("Every model the app can load. Models load on first use, once. Add an `mft run` "
                            "results folder (its masks), a fine-tuning run or checkpoint, or an exported model.")
                with gr.Row():
                    folder_in = gr.Textbox(label="Folder to add", placeholder="results/mft_20250101_120000",
                                           elem_id="models_folder", scale=4)
                    add_btn = gr.Button("Add folder", elem_id="models_add", scale=1)
                with gr.Row():
                    root_in = gr.Textbox(label="Find folders under", value=str(roots[0]) if roots else "results",
                                         elem_id="models_root", scale=4)
                    scan_btn = gr.Button("Scan", elem_id="models_scan", scale=1)
                models_status = status("models_status")
                models_df = gr.Dataframe(value=models_table(), headers=["model", "source"], interactive=False,
                                         wrap=True, elem_id="models_table", label="Models offered")

            with gr.Tab("Try it", id="try"):
                with gr.Row():
                    try_model = model_dropdown("try_model", "Model", first)
                try_text = gr.Textbox(label="Text", lines=3, placeholder="a gripping, beautifully acted film",
                                      elem_id="try_text")
                try_pair = gr.Textbox(label="Second sentence (pair tasks only: MRPC, QQP, MNLI, ...)", lines=1,
                                      elem_id="try_pair")
                try_btn = gr.Button("Predict", variant="primary", elem_id="try_run")
                try_status = status("try_status")
                with gr.Row():
                    with gr.Column(scale=3):
                        try_result = gr.Markdown("", elem_id="try_result")
                        try_counts = gr.Markdown("", elem_id="try_counts")
                    try_probs = gr.Label(label="Confidence per class (softmax)", elem_id="try_probs", scale=2)

            with gr.Tab("Batch", id="batch"):
                with gr.Row():
                    batch_model = model_dropdown("batch_model", "Model", first)
                batch_file = gr.File(label="CSV or TSV with a header row", file_types=[".csv", ".tsv", ".txt"],
                                     elem_id="batch_file")
                with gr.Row():
                    batch_text_col = gr.Dropdown(label="Text column", choices=[], elem_id="batch_text_col")
                    batch_pair_col = gr.Dropdown(label="Second text column (pair tasks)", choices=[],
                                                 elem_id="batch_pair_col")
                    batch_label_col = gr.Dropdown(label="Label column (optional)", choices=[],
                                                  elem_id="batch_label_col")
                batch_btn = gr.Button("Run batch", variant="primary", elem_id="batch_run")
                batch_status = status("batch_status")
                batch_metrics = gr.Markdown("", elem_id="batch_metrics")
                batch_download = gr.File(label="Predictions (CSV)", interactive=False, elem_id="batch_download")
                batch_table = gr.Dataframe(label="Predictions (first 200 rows)", interactive=False, wrap=True,
                                           elem_id="batch_table")

            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    inspect_found = gr.Dropdown(label="Results folders found", choices=inspect_choices(),
                                                elem_id="inspect_found", scale=2)
                    inspect_path = gr.Textbox(label="Results folder", elem_id="inspect_path", scale=3)
                    inspect_fraction = gr.Dropdown(label="Mask fraction (mft run)", choices=[],
                                                   elem_id="inspect_fraction", scale=1)
                inspect_btn = gr.Button("Open", variant="primary", elem_id="inspect_open")
                inspect_status = status("inspect_status")
                inspect_summary = gr.Markdown("", elem_id="inspect_summary")
                # full width: the heatmap has a column per module and must stay legible
                inspect_heatmap = gr.Image(label="Zeroed share per layer × module", show_label=False, type="pil",
                                           interactive=False, elem_id="inspect_heatmap")
                with gr.Row():
                    inspect_curves = gr.Image(label="Curves", show_label=False, type="pil", interactive=False,
                                              elem_id="inspect_curves")
                    inspect_table = gr.Dataframe(label="Table", interactive=False, wrap=True, elem_id="inspect_table")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    cmp_a = model_dropdown("cmp_a", "Model a", first)
                    cmp_b = model_dropdown("cmp_b", "Model b", second)
                cmp_text = gr.Textbox(label="Text", lines=2, elem_id="cmp_text")
                cmp_pair = gr.Textbox(label="Second sentence (pair tasks only)", elem_id="cmp_pair")
                cmp_text_btn = gr.Button("Compare on this text", variant="primary", elem_id="cmp_text_run")
                cmp_file = gr.File(label="CSV or TSV with a header row", file_types=[".csv", ".tsv", ".txt"],
                                   elem_id="cmp_file")
                with gr.Row():
                    cmp_text_col = gr.Dropdown(label="Text column", choices=[], elem_id="cmp_text_col")
                    cmp_pair_col = gr.Dropdown(label="Second text column (pair tasks)", choices=[],
                                               elem_id="cmp_pair_col")
                    cmp_label_col = gr.Dropdown(label="Label column (optional)", choices=[], elem_id="cmp_label_col")
                cmp_csv_btn = gr.Button("Compare on this CSV", elem_id="cmp_csv_run")
                cmp_status = status("cmp_status")
                cmp_result = gr.Markdown("", elem_id="cmp_result")
                cmp_table = gr.Dataframe(label="Rows where the models disagree", interactive=False, wrap=True,
                                         elem_id="cmp_table")

        model_pickers = [try_model, batch_model, cmp_a, cmp_b]

        def refreshed(message: str):
            """The Models tab's outputs after the store changed: message, table, every picker."""
            ch = model_choices()
            return [message, models_table(), *[gr.update(choices=ch) for _ in model_pickers],
                    gr.update(choices=inspect_choices())]

        def add_folder(path):
            """Models tab: add the models a folder offers to every picker."""
            try:
                added = store.add_folder(path)
                return refreshed("Added: " + "; ".join(c.label for c in added))
            except Exception as e:  # noqa: BLE001 - every failure becomes the status line
                return [error_text(e), *[gr.update() for _ in range(len(model_pickers) + 2)]]

        def scan_folders(root):
            """Models tab: add every model folder found under a root."""
            try:
                if not str(root or "").strip():
                    raise AppInputError("no folder given to scan")
                if not Path(str(root).strip()).expanduser().is_dir():
                    raise AppInputError(f"{root} is not a folder")
                if str(root).strip() not in [str(r) for r in roots]:
                    roots.append(str(root).strip())
                found = store.scan(str(root).strip())
                n_models = sum(len(i.choices) for i in found)
                return refreshed(f"Found {len(found)} folders under {root}, {n_models} models")
            except Exception as e:  # noqa: BLE001
                return [error_text(e), *[gr.update() for _ in range(len(model_pickers) + 2)]]

        refresh_outputs = [models_status, models_df, *model_pickers, inspect_found]
        add_btn.click(add_folder, [folder_in], refresh_outputs)
        folder_in.submit(add_folder, [folder_in], refresh_outputs)
        scan_btn.click(scan_folders, [root_in], refresh_outputs)

        def predict(key, text, pair):
            """Try it: one text → status, headline (label, confidence, latency), counts, class confidences."""
            try:
                p = predict_text(store, key, text, pair)
                return "", prediction_markdown(p), counts_markdown(p.counts), (p.probs or None)
            except Exception as e:  # noqa: BLE001
                return error_text(e), "", "", None

        try_outputs = [try_status, try_result, try_counts, try_probs]
        try_btn.click(predict, [try_model, try_text, try_pair], try_outputs)
        try_text.submit(predict, [try_model, try_text, try_pair], try_outputs)

        def read_columns(path):
            """Header of an uploaded file → the column pickers, with defaults guessed from the names."""
            try:
                header = read_table(path).header
            except Exception as e:  # noqa: BLE001
                return error_text(e), gr.update(choices=[], value=None), gr.update(choices=[], value=None), \
                    gr.update(choices=[], value=None)
            optional = [("(none)", "")] + [(h, h) for h in header]
            return ("", gr.update(choices=header, value=default_column(header, TEXT_NAMES, True)),
                    gr.update(choices=optional, value=default_column(header, PAIR_NAMES) or ""),
                    gr.update(choices=optional, value=default_column(header, LABEL_NAMES) or ""))

        # A new file clears the results of the last one, so no figure stands under a file it was not made from.
        batch_file.upload(lambda p: (*read_columns(p), "", None, gr.update(value=None)), [batch_file],
                          [batch_status, batch_text_col, batch_pair_col, batch_label_col, batch_metrics,
                           batch_download, batch_table])
        cmp_file.upload(lambda p: (*read_columns(p), "", gr.update(value=None)), [cmp_file],
                        [cmp_status, cmp_text_col, cmp_pair_col, cmp_label_col, cmp_result, cmp_table])

        # gradio finds its progress tracker by this default value: the call in the signature is its API
        def batch(key, path, text_col, pair_col, label_col, progress=gr.Progress()):  # noqa: B008
            """Batch: a CSV → status, metrics, predictions CSV path, the first rows."""
            try:
                r = predict_batch(store, key, path, text_col, label_col or None, pair_col or None,
                                  lambda d, n: progress((d, n), desc="rows"))
                return "", metrics_markdown(r), str(r.csv_path), gr.update(value=r.rows, headers=r.columns)
            except Exception as e:  # noqa: BLE001
                return error_text(e), "", None, gr.update(value=None)

        batch_btn.click(batch, [batch_model, batch_file, batch_text_col, batch_pair_col, batch_label_col],
                        [batch_status, batch_metrics, batch_download, batch_table])

        def inspect(path, fraction):
            """Inspect: a results folder → status, summary, heatmap, curves, table, fraction picker."""
            try:
                r = inspect_folder(path, float(fraction) if fraction not in (None, "") else None)
                fr = gr.update(choices=[f"{f:g}" for f in r.fractions],
                               value=f"{r.fraction:g}" if r.fraction is not None else None)
                table = gr.update(value=r.table_rows or None, headers=r.table_header or None)
                return "", r.summary, r.heatmap, r.curves, table, fr
            except Exception as e:  # noqa: BLE001
                return error_text(e), "", None, None, gr.update(value=None), gr.update()

        inspect_outputs = [inspect_status, inspect_summary, inspect_heatmap, inspect_curves, inspect_table,
                           inspect_fraction]
        inspect_found.change(lambda p: p or "", [inspect_found], [inspect_path])
        inspect_btn.click(inspect, [inspect_path, gr.State(None)], inspect_outputs)
        inspect_path.submit(inspect, [inspect_path, gr.State(None)], inspect_outputs)
        inspect_fraction.input(inspect, [inspect_path, inspect_fraction], inspect_outputs)

        def compare_texts(key_a, key_b, text, pair):
            """Compare: one text through models a and b → status, side-by-side table."""
            try:
                r = compare_text(store, key_a, key_b, text, pair)
                agree = "the models **agree**" if r.agree else "the models **disagree**"
                md = (f"| | model a | model b |\n|---|---|---|\n| model | {r.a.model} | {r.b.model} |\n"
                      f"| label | **{r.a.label}** | **{r.b.label}** |\n"
                      f"| confidence | {_pct(r.a.confidence)} | {_pct(r.b.confidence)} |\n"
                      f"| latency | {r.a.latency_ms:.1f} ms | {r.b.latency_ms:.1f} ms |\n\n"
                      f"{agree}; latency b − a: {r.latency_diff_ms:+.1f} ms")
                return "", md, gr.update(value=None)
            except Exception as e:  # noqa: BLE001
                return error_text(e), "", gr.update(value=None)

        def compare_csv(key_a, key_b, path, text_col, pair_col, label_col, progress=gr.Progress()):  # noqa: B008
            """Compare: one CSV through models a and b → status, differences, disagreeing rows."""
            try:
                r = compare_batch(store, key_a, key_b, path, text_col, label_col or None, pair_col or None,
                                  lambda d, n: progress((d, n), desc="rows"))
                acc = (f"accuracy a **{r.a.metrics['accuracy']:.4f}** · b **{r.b.metrics['accuracy']:.4f}** · "
                       f"b − a {r.accuracy_diff:+.4f}" if r.accuracy_diff is not None else "no label column: no accuracy")
                md = (f"**{r.a.n:,} rows** · a: {r.a.model} · b: {r.b.model}\n\n{acc}\n\n"
                      f"mean latency a {r.a.mean_ms:.2f} ms · b {r.b.mean_ms:.2f} ms · b − a {r.mean_ms_diff:+.2f} ms\n\n"
                      f"agreement {100 * r.agreement:.1f}% · {r.n_disagree:,} rows disagree")
                return "", md, gr.update(value=r.rows or None, headers=r.columns)
            except Exception as e:  # noqa: BLE001
                return error_text(e), "", gr.update(value=None)

        cmp_text_btn.click(compare_texts, [cmp_a, cmp_b, cmp_text, cmp_pair], [cmp_status, cmp_result, cmp_table])
        cmp_csv_btn.click(compare_csv, [cmp_a, cmp_b, cmp_file, cmp_text_col, cmp_pair_col, cmp_label_col],
                          [cmp_status, cmp_result, cmp_table])
    return demo


def _pct(v: float | None) -> str:
    return f"{100 * v:.1f}%" if v is not None else "—"


def serve(models: list[str | Path] = (), host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          roots: list[str | Path] | None = None) -> None:
    """Build the page over the folders `models` (preloaded into the pickers; loaded on first use) and serve
    it on host:port until interrupted. No analytics (GRADIO_ANALYTICS_ENABLED=False before gradio is
    imported), no share link unless `share`, no server-side rendering (no Node process).

    Raises AppInputError when a folder in `models` holds no model; ImportError when gradio is missing.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    store = ModelStore(list(models))
    scan_roots = list(roots) if roots is not None else (["results"] if Path("results").is_dir() else [])
    # the preloaded folders themselves: a run folder given with --models is also one to inspect
    scan_roots += [str(Path(m).resolve()) for m in models]
    demo = build_app(store, scan_roots)
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=False,
                max_file_size=SERVER_MAX_FILE_SIZE, css=CSS, quiet=False, inbrowser=False)

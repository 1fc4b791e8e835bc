"""What every report is made of: blocks (headings, paragraphs, tables, figures, samples of generated text), and
the two ways they are written, HTML (one self-contained file: styles and plots inside, no network) and Markdown
(its plots as PNG files in figures/ beside it). A report's content is built once, as blocks, and written twice,
so the two files never say different things.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

from distill.report import figures
from distill.report.evidence import Curve


@dataclass
class Heading:
    text: str


@dataclass
class Paragraph:
    text: str
    note: bool = False  # small print under a table or figure


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # its file in figures/
    png: bytes
    alt: str


@dataclass
class Samples:
    """One prompt and what each model (or the held-out text) wrote after it, side by side."""

    title: str
    prompt: str
    columns: list[tuple[str, str]]  # (whose, the text after the prompt)


Block = Heading | Paragraph | Table | Figure | Samples


def training(curves: list[Curve], note: str) -> list[Block]:
    """The training section both tasks share: each stage's curves from its metrics.jsonl, under `note`."""
    blocks: list[Block] = [Heading("Training"), Paragraph(note, note=True)]
    for curve in curves:
        blocks.append(Figure(f"curves_{curve.stage}.png", figures.curves(curve), f"training curves of {curve.stage}"))
    return blocks


# --- Markdown --------------------------------------------------------------------------------------------------


def markdown(name: str, blocks: list[Block]) -> str:
    lines = [f"# distill report: {name}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"## {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [f"_{block.text}_" if block.note else block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Samples):
            lines += _markdown_samples(block)
        else:
            lines += [f"![{block.alt}](figures/{block.name})", ""]
    return "\n".join(lines)


def _markdown_samples(block: Samples) -> list[str]:
    """The prompt, then each column's text, in fenced blocks one after another: Markdown has no side by side
    that keeps a text's line breaks and indentation."""
    lines = [f"**{block.title}**", "", *_fenced(block.prompt)]
    for whose, text in block.columns:
        lines += [f"_{whose}:_", "", *_fenced(text)]
    return lines


def _fenced(text: str) -> list[str]:
    """`text` verbatim in a fence longer than any run of backticks inside it (generated code may hold ```)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return [f"{fence}text", text, fence, ""]


# --- HTML ------------------------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { background: #f5f5f7; }
p.note { color: #555; font-size: 0.85em; max-width: 60em; }
div.wide { overflow-x: auto; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
h3.sample { font-size: 1em; margin: 1.4em 0 0.3em; }
pre { font: 13px/1.35 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre-wrap;
      word-break: break-all; margin: 0; }
pre.prompt { background: #f5f5f7; padding: 0.4em 0.6em; max-width: 60em; }
table.samples { table-layout: fixed; width: 100%; }
table.samples th, table.samples td { text-align: left; vertical-align: top; white-space: normal; }
span.prompt { color: #999; }
"""

# Sets <body data-images="LOADED/TOTAL"> once the page has loaded: a check a person or a headless browser reads.
CHECK_IMAGES = """
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.dataset.images = loaded + "/" + images.length;
});
"""


def to_html(name: str, blocks: list[Block]) -> str:
    parts = [f"<h1>distill report: {html.escape(name)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h2>{html.escape(block.text)}</h2>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p{' class=note' if block.note else ''}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
        elif isinstance(block, Samples):
            parts.append(_html_samples(block))
        else:
            data = base64.b64encode(block.png).decode()
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">')
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>distill report: {html.escape(name)}'
        f"</title>\n<style>{STYLE}</style>\n<script>{CHECK_IMAGES}</script></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _html_samples(block: Samples) -> str:
    """The prompt once, then one column per model; each column starts with the prompt's last line, greyed, so a
    completion that begins mid-line reads on from it."""
    tail = html.escape(block.prompt.rsplit("\n", 1)[-1])
    head = "".join(f"<th>{html.escape(whose)}</th>" for whose, _ in block.columns)
    cells = "".join(
        f"<td><pre><span class=prompt>{tail}</span>{html.escape(text)}</pre></td>" for _, text in block.columns
    )
    return (
        f"<h3 class=sample>{html.escape(block.title)}</h3>\n<pre class=prompt>{html.escape(block.prompt)}</pre>\n"
        f"<div class=wide><table class=samples><thead><tr>{head}</tr></thead><tbody><tr>{cells}</tr></tbody></table>"
        "</div>"
    )

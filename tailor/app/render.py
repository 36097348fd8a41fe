"""How the CLI shows things to a person: recommendations, emails, refusals, explanations, support answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tailor.core.models import CONTROL_CHARACTERS, Explanation, JsonObject, Recommendation

if TYPE_CHECKING:
    # Types only: the CLI imports this module for every command, and the agent and the service (langgraph,
    # pandas, the eval suites) are loaded by the commands that use them.
    from agent import EmailOutcome
    from agent.support import SupportAnswer
    from tailor.app.service import Tailor

__all__ = [
    "markup_safe",
    "outcome_dict",
    "print_explanation",
    "print_outcome",
    "print_recommendations",
    "print_support",
    "run_demo",
    "terminal_safe",
]


def terminal_safe(text: object) -> str:
    """``text`` with every control and bidirectional formatting character written out as an escape
    (``\\x1b``, ``\\u202e``): data printed to a terminal must not drive it (ANSI escapes, BEL, NUL) nor
    show itself reversed (U+202E). Stored text may predate the input rule that refuses these
    (``tailor.core.models.refuse_control``), and an item or a name may come from any import."""
    return CONTROL_CHARACTERS.sub(_escaped, str(text))


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def markup_safe(text: object) -> str:
    """``terminal_safe``, and rich's markup escaped: for data inside a string that rich parses as markup
    (a panel's title, a table cell, ``Console.print``), where ``[bold red]`` in a name would be obeyed."""
    return escape(terminal_safe(text))


def _text(text: object, style: str = "") -> Text:
    return Text(terminal_safe(text), style=style)


def print_recommendations(
    console: Console, recs: Sequence[Recommendation], *, title: str = "Recommendations"
) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("price", justify="right")
    table.add_column("why (top evidence)")
    for rec in recs:
        reason = rec.evidence[0].summary if rec.evidence else ", ".join(rec.sources)
        cells = (rec.item.id, rec.item.title, rec.item.price_text, reason)
        table.add_row(str(rec.rank), *(_text(c) for c in cells))
    console.print(table)


def print_explanation(console: Console, explanation: Explanation) -> None:
    lines = Text()
    for n, sentence in enumerate(explanation.sentences, start=1):
        lines.append(terminal_safe(sentence.text), style="bold")
        cited = "; ".join(e.summary for e in sentence.evidence) or "no evidence cited"
        lines.append(f"\n   [{n}] {terminal_safe(cited)}\n", style="dim")
    item, customer = markup_safe(explanation.item_id), markup_safe(explanation.customer_id)
    console.print(Panel(lines, title=f"Why item {item} for customer {customer}"))


def outcome_dict(outcome: EmailOutcome) -> JsonObject:
    data: JsonObject = {
        "email": outcome.email.model_dump(mode="json") if outcome.email else None,
        "refusal": outcome.refusal.model_dump(mode="json") if outcome.refusal else None,
    }
    if outcome.send_id is not None:
        data["send_id"] = outcome.send_id
    if outcome.plan is not None:
        data["plan"] = outcome.plan.model_dump(mode="json")
    data["audit"] = outcome.audit
    return data


def print_outcome(console: Console, outcome: EmailOutcome) -> None:
    email = outcome.email
    if email is None:
        r = outcome.refusal
        if r is None:  # the agent always gives one or the other
            raise ValueError(f"outcome for {outcome.customer_id!r} has neither an email nor a refusal")
        console.print(
            Panel(
                f"[bold]{markup_safe(r.reason)}[/]: {markup_safe(r.detail)}",
                title=f"No email for customer {markup_safe(r.customer_id)}",
                border_style="yellow",
            )
        )
        return
    header = Text()
    header.append("Subject: ", style="dim")
    header.append(terminal_safe(email.subject) + "\n", style="bold")
    header.append("Preheader: ", style="dim")
    header.append(terminal_safe(email.preheader) + "\n")
    meta = f"action={email.action} writer={email.writer}"
    if email.fallback_parts:
        meta += f" fallback={','.join(email.fallback_parts)}"
    console.print(
        Panel(
            Group(header, _text(email.body_text)),
            title=f"Email to customer {markup_safe(email.customer_id)}",
            subtitle=markup_safe(meta),
            border_style="green",
        )
    )


def print_support(console: Console, answer: SupportAnswer) -> None:
    tools = ", ".join(f"{t.name}{' (model)' if t.by == 'model' else ''} {t.ms:.0f} ms" for t in answer.tools)
    console.print(
        f"[dim]asked about: {markup_safe(answer.intent)} (confidence {answer.confidence:.2f}); tools: "
        f"{markup_safe(tools or 'none')}; thought: {markup_safe(answer.thinker)}[/]"
    )
    for why in answer.fell_back:
        console.print(f"[dim]the offline way stood in: {markup_safe(why)}[/]")
    if answer.no_match:
        console.print(f"[yellow]no order {markup_safe(', '.join(answer.no_match))} for this customer[/]")
    for n, suggestion in enumerate(answer.suggestions, start=1):
        body = Text()
        for point in suggestion.talking_points:
            body.append(f"• {terminal_safe(point)}\n")
        evidence = "; ".join(e.summary for e in suggestion.evidence) or "no evidence"
        body.append(f"evidence: {terminal_safe(evidence)}", style="dim")
        by = " (the model's words)" if suggestion.points_by == "model" else ""
        console.print(Panel(body, title=f"{n}. {markup_safe(suggestion.title)}{by}"))
    # What the rails withheld, redacted, dropped or neutralized is shown too: nothing changes silently.
    for note in answer.guardrail_notes:
        rules = ", ".join(note.rules)
        console.print(
            f"[dim]guardrail: {markup_safe(note.action)} {markup_safe(note.kind)} ({markup_safe(rules)}):"
            f" {markup_safe(note.detail)}[/]"
        )


def run_demo(
    tailor: Tailor,
    console: Console,
    *,
    progress: Callable[[str, int, int], None],
    customers_limit: int | None = None,
    n_customers: int = 3,
) -> list[str]:
    """The main job on embedded defaults: import, index, then three customers end to end."""
    report = tailor.import_uci(customers_limit=customers_limit)
    verb = "unchanged" if report.skipped else "imported"
    console.print(
        f"[dim]store {verb}: {report.items} items, {report.customers} customers, {report.events} events[/]"
    )
    index_report = tailor.index(progress=progress)
    console.print("[dim]index: " + " ".join(f"{k}={v}" for k, v in index_report.items()) + "[/]")
    chosen: list[str] = tailor.demo_customers(n_customers)
    for customer_id in chosen:
        customer = tailor.store.get_customer(customer_id)
        who = markup_safe(f"{customer.id} ({customer.first_name}, {customer.country}; synthetic name)")
        console.rule(f"Customer {who}")
        recs = tailor.recommend(customer_id, k=5)
        print_recommendations(console, recs, title=f"Top {len(recs)} for customer {customer_id}")
        print_outcome(console, tailor.email(customer_id, trigger="campaign"))
        if recs:
            print_explanation(console, tailor.why(customer_id, recs[0].item.id))
    console.rule("Next")
    console.print(
        "The same in a browser: [bold]tailor keys create --role support[/] (and [bold]--role crm[/] for"
        " campaigns), [bold]tailor serve[/], then open http://127.0.0.1:8000/console and log in with the key."
    )
    return chosen

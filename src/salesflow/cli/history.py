"""`salesflow history`: what the curated history holds per upload, and taking an upload back out —
read from and written to the warehouse in this process (the job server's /history/uploads
answers the same)."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from salesflow.cli.app import JsonOption, app, settings
from salesflow.cli.output import console, emit, print_json

__all__ = ["history", "history_remove"]

history_app = typer.Typer(
    help="What the curated history holds per upload; take an upload back out.",
    invoke_without_command=True,
)
app.add_typer(history_app, name="history")


def _dates(entry: dict[str, Any]) -> str:
    first, last = entry.get("first_date"), entry.get("last_date")
    return f"{first} .. {last}" if first and last else "-"


def _stores(entry: dict[str, Any]) -> str:
    stores = entry.get("stores") or []
    return ", ".join(stores[:3]) + (f" +{len(stores) - 3}" if len(stores) > 3 else "")


def _superseded(entry: dict[str, Any]) -> str:
    if entry.get("removed"):
        removed = entry["removed"]
        return f"removed {removed['at'][:19]} by {removed['by']}: {removed['reason']}"
    return "; ".join(
        f"{s['rows']:,} rows by {s['by']} ({s['first_date']} .. {s['last_date']})"
        for s in entry.get("superseded") or []
    )


@history_app.callback()
def history(
    ctx: typer.Context,
    everything: Annotated[bool, typer.Option("--all", help="Also list removed uploads.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the uploads in the curated history, oldest first: live rows (per store, product and
    day), stores, date range, mode, and what later uploads superseded (wholly or partly)."""
    if ctx.invoked_subcommand is not None:
        return
    from salesflow.sales import ledger

    book = ledger.load(settings().warehouse_path / "curated")
    entries = [e.to_dict() for e in book.entries if everything or e.removed is None]
    emit(
        entries,
        [
            ("upload", "id"),
            ("status", "status"),
            ("mode", "mode"),
            ("rows", lambda e: f"{e['rows']:,} of {e['rows_added']:,}"),
            ("stores", _stores),
            ("dates", _dates),
            ("added", lambda e: e["added_at"][:19]),
            ("superseded / removed", _superseded),
        ],
        as_json=as_json,
        title="curated history",
        empty="the curated history is empty",
    )


@history_app.command("remove")
def history_remove(
    upload_id: Annotated[
        str, typer.Argument(help="Upload id (or the first digits of a file's sha256).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why it is taken out (recorded).")],
    as_json: JsonOption = False,
) -> None:
    """Take an upload's rows out of the curated history (recorded with who, when and why; all
    at once or not at all). Rows it replaced in earlier uploads stay replaced. Retrain after."""
    from salesflow.sales import ledger

    entry = ledger.remove(
        settings().warehouse_path / "curated", upload_id, getpass.getuser(), reason
    )
    if as_json:
        print_json(entry.to_dict())
        return
    console.print(
        f"removed upload {entry.id} from the curated history; "
        "retrain to leave its rows out of the models: salesflow retrain"
    )

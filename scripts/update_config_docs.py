"""Rewrite the configuration table in docs/configuration.md from the settings object (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from salesflow.config import settings_table

CONFIGURATION = Path(__file__).parents[1] / "docs" / "configuration.md"


def main() -> None:
    text = CONFIGURATION.read_text()
    table = "<!-- settings:start -->\n" + settings_table() + "\n<!-- settings:end -->"
    CONFIGURATION.write_text(
        re.sub(
            r"<!-- settings:start -->\n.*?<!-- settings:end -->", lambda _: table, text, flags=re.S
        )
    )


if __name__ == "__main__":
    main()

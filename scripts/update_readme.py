"""Rewrite the README's configuration table from the settings object (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from salesflow.config import settings_table

README = Path(__file__).parents[1] / "README.md"


def main() -> None:
    text = README.read_text()
    table = "<!-- settings:start -->\n" + settings_table() + "\n<!-- settings:end -->"
    README.write_text(
        re.sub(
            r"<!-- settings:start -->\n.*?<!-- settings:end -->", lambda _: table, text, flags=re.S
        )
    )


if __name__ == "__main__":
    main()

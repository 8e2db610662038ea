"""The Java check every Spark start makes first: a usable java (17 or newer) on PATH, or the fix."""

from __future__ import annotations

import shutil
import subprocess

from salesflow.errors import ConfigurationError

__all__ = ["JAVA_HINT", "check_java"]

JAVA_HINT = (
    "Java 17 or newer is required to run Spark and was not found on PATH. "
    "Install it with: apt-get install openjdk-17-jre-headless"
)


def check_java() -> None:
    """Fail early, with the fix, when no usable java is on PATH."""
    java = shutil.which("java")
    if java is None:
        raise ConfigurationError(JAVA_HINT)
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    # `java -version` prints e.g. 'openjdk version "17.0.15"' or 'version "1.8.0_392"'.
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        return
    if major < 17:
        raise ConfigurationError(f"Java {major} found; {JAVA_HINT}")

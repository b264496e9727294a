"""Print the Debian mirror that this machine's apt uses for a suite (for debootstrap).

The container check builds its base image with debootstrap from the same mirror apt already reaches,
so nothing in the repository names a mirror host. Reads ``/etc/apt/sources.list``, ``*.list`` and
deb822 ``*.sources`` files under ``sources.list.d``; prints the first ``deb`` URI that serves the
suite, or nothing (exit 1) when none does, in which case debootstrap's own default applies.

    python apt_mirror.py bookworm
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

APT_DIR = Path("/etc/apt")


def one_line_entries(text: str) -> Iterator[tuple[str, str, list[str]]]:
    """(type, uri, [suite]) from one-line-style sources (``deb [opts] URI SUITE COMPONENT...``)."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith("["):  # options such as [arch=amd64 signed-by=...]
            closing = rest.find("]")
            if closing < 0:
                continue
            rest = rest[closing + 1 :].strip()
        fields = rest.split()
        if len(fields) >= 2:
            yield kind, fields[0], [fields[1]]


def deb822_entries(text: str) -> Iterator[tuple[str, str, list[str]]]:
    """(type, uri, suites) from deb822-style ``.sources`` stanzas; ``Enabled: no`` is skipped."""
    stanzas: list[dict[str, str]] = [{}]
    last_key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanzas[-1]:
                stanzas.append({})
            continue
        if raw[0] in " \t" and last_key:  # continuation line
            stanzas[-1][last_key] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if sep:
            last_key = key.strip().lower()
            stanzas[-1][last_key] = value.strip()
    for stanza in stanzas:
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        suites = stanza.get("suites", "").split()
        for kind in stanza.get("types", "").split():
            for uri in stanza.get("uris", "").split():
                yield kind, uri, suites


def source_files(apt_dir: Path) -> list[Path]:
    """apt's source files in the order apt reads them."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in {".list", ".sources"})
    return [f for f in files if f.is_file()]


def entries(files: Iterable[Path]) -> Iterator[tuple[str, str, list[str]]]:
    """Every source entry of the given files, parsed by the file's style."""
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        parse = deb822_entries if path.suffix == ".sources" else one_line_entries
        yield from parse(text)


def mirror_for(suite: str, apt_dir: Path = APT_DIR) -> str | None:
    """The first binary (``deb``) URI whose suites include ``suite`` exactly."""
    for kind, uri, suites in entries(source_files(apt_dir)):
        if kind == "deb" and suite in suites and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the apt mirror that serves a Debian suite")
    parser.add_argument("suite", help="e.g. bookworm")
    parser.add_argument("--apt-dir", type=Path, default=APT_DIR, help="default /etc/apt")
    args = parser.parse_args(argv)
    uri = mirror_for(args.suite, args.apt_dir)
    if uri is None:
        print(f"apt_mirror: no deb source for {args.suite} under {args.apt_dir}", file=sys.stderr)
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

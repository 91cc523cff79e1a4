"""The documentation against the code, and the limits the restructure set.

- README.md quotes `build_pipeline` exactly as sensor_stream_processor.py has it.
- docs/configuration.md holds the settings tables rendered from the settings classes,
  and its "Make variables" table the Makefile's `?=` variables with their defaults.
- The size limits hold: README.md and benchmarks/README.md in words, the scripts in lines.
- README.md, docs/, tests/README.md and benchmarks/README.md hold no run history
  ("stop 12", "issue 29", "CI saw"), no first person and no test names, and their
  relative links resolve.

No broker, no subprocess, no network: this is `make test-fast`. To print the settings
tables for docs/configuration.md:

    python tests/test_docs.py
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for `python tests/test_docs.py`

from sensor_lib.demo import DemoSettings  # noqa: E402
from sensor_lib.settings import BrokerSettings  # noqa: E402
from sensor_stream_chart import ChartSettings  # noqa: E402
from sensor_stream_processor import ProcessorSettings, build_pipeline  # noqa: E402
from sensor_stream_producer import ProducerSettings  # noqa: E402
from sensor_stream_sink import SinkSettings  # noqa: E402
from sensor_stream_viewer import ViewerSettings  # noqa: E402

README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
MAKEFILE = REPO / "Makefile"
BENCHMARKS_README = REPO / "benchmarks" / "README.md"
PROSE = sorted(
    [README, REPO / "tests" / "README.md", BENCHMARKS_README, *(REPO / "docs").glob("*.md")]
)

# Each table of docs/configuration.md: the broker settings every script shares, then
# each script's own (its class's fields beyond BrokerSettings).
TABLES: list[tuple[type[BaseSettings], type[BaseSettings] | None]] = [
    (BrokerSettings, None),
    (ProducerSettings, BrokerSettings),
    (ProcessorSettings, BrokerSettings),
    (SinkSettings, BrokerSettings),
    (ViewerSettings, BrokerSettings),
    (ChartSettings, BrokerSettings),
    (DemoSettings, BrokerSettings),
]


# --- Rendering the settings tables from the classes ---------------------------------------


def is_positional(field: FieldInfo) -> bool:
    """A CliPositionalArg: an argument with no flag and no variable."""
    return any(getattr(marker, "__name__", "") == "_CliPositionalArg" for marker in field.metadata)


def show_default(field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    if default == "":
        return "empty"
    return f"`{default}`"


def cell(text: str) -> str:
    """Text for a table cell: `|` escaped, and `<...>` kept from reading as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "\\<")


def settings_table(cls: type[BaseSettings], beyond: type[BaseSettings] | None) -> str:
    """The markdown table of `cls`'s settings, leaving out those of `beyond`."""
    rows = ["| variable | flag | default | description |", "| --- | --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        if beyond is not None and name in beyond.model_fields:
            continue
        flag = name.replace("_", "-")
        if is_positional(field):
            variable, flags = "-", f"`{name.upper()}` (positional)"
        elif field.annotation is bool:
            variable, flags = f"`{name.upper()}`", f"`--{flag}`, `--no-{flag}`"
        else:
            variable, flags = f"`{name.upper()}`", f"`--{flag}`"
        description = cell(field.description or "")
        rows.append(f"| {variable} | {flags} | {show_default(field)} | {description} |")
    return "\n".join(rows) + "\n"


def all_tables() -> list[tuple[str, str]]:
    return [(cls.__name__, settings_table(cls, beyond)) for cls, beyond in TABLES]


# --- The tests ---------------------------------------------------------------------------


def python_block_after(text: str, heading: str) -> str:
    """The first ```python block after `heading`, without its fences."""
    section = text.split(f"\n{heading}\n", 1)
    assert len(section) == 2, f"README.md has no heading {heading!r}"
    block = re.search(r"^```python\n(.*?)^```$", section[1], flags=re.DOTALL | re.MULTILINE)
    assert block is not None, f"no ```python block under {heading!r}"
    return block.group(1)


def test_the_readme_quotes_build_pipeline_exactly() -> None:
    quoted = python_block_after(README.read_text(encoding="utf-8"), "## The pipeline in 20 lines")
    assert quoted == inspect.getsource(build_pipeline), (
        "README.md's quote of build_pipeline differs from sensor_stream_processor.py; "
        "paste the function again"
    )


@pytest.mark.parametrize(("name", "table"), all_tables(), ids=[name for name, _ in all_tables()])
def test_configuration_md_holds_each_settings_table(name: str, table: str) -> None:
    doc = CONFIGURATION.read_text(encoding="utf-8")
    if table not in doc:
        print(f"docs/configuration.md should hold this table for {name}:\n\n{table}")
    assert table in doc, f"docs/configuration.md: the {name} table differs from the class"


def makefile_defaults() -> dict[str, str]:
    """The Makefile's `NAME ?= value` variables, which a user may set: name -> value."""
    found = re.findall(r"^(\w+)\s*\?=\s*(.*)$", MAKEFILE.read_text(encoding="utf-8"), re.M)
    return {name: re.sub(r"\s*#.*", "", value).strip() for name, value in found}


def make_variables_table() -> list[tuple[str, str]]:
    """The rows of docs/configuration.md's "Make variables" table: (variable, default)."""
    doc = CONFIGURATION.read_text(encoding="utf-8")
    section = doc.split("\n## Make variables\n", 1)
    assert len(section) == 2, "docs/configuration.md has no heading '## Make variables'"
    table = section[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", table, flags=re.MULTILINE)


def test_the_make_variables_table_gives_each_makefile_default_and_no_other() -> None:
    rows = make_variables_table()
    table, makefile = dict(rows), makefile_defaults()
    assert len(table) == len(rows), f"docs/configuration.md: a Make variable twice: {rows}"
    missing = sorted(makefile.keys() - table.keys())
    unknown = sorted(table.keys() - makefile.keys())
    differ = {n: (table[n], makefile[n]) for n in table.keys() & makefile.keys()}
    differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
    assert not missing, f"docs/configuration.md's Make variables table lacks {missing}"
    assert not unknown, f"docs/configuration.md lists Make variables the Makefile lacks: {unknown}"
    assert not differ, f"docs/configuration.md's Make defaults (doc, Makefile) differ: {differ}"


def words(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").split())  # as `wc -w` counts


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_readme_stays_under_2000_words() -> None:
    assert words(README) <= 2000


def test_the_benchmarks_readme_stays_under_1500_words() -> None:
    assert words(BENCHMARKS_README) <= 1500


@pytest.mark.parametrize(
    ("script", "limit"),
    [
        ("sensor_stream_processor.py", 330),
        ("sensor_stream_producer.py", 240),
        ("sensor_stream_viewer.py", 260),
        ("sensor_stream_sink.py", 160),
    ],
)
def test_the_scripts_stay_short_as_ruff_formats_them(script: str, limit: int) -> None:
    assert len(lines(REPO / script)) <= limit
    assert "fmt: skip" not in (REPO / script).read_text()


def test_the_processors_sdf_chain_stays_short() -> None:
    text = lines(REPO / "sensor_stream_processor.py")
    first = next(i for i, line in enumerate(text) if "sdf = app.dataframe(" in line)
    last = next(i for i, line in enumerate(text) if "return sdf.to_topic(" in line)
    assert 0 < last - first + 1 <= 30


# "I ", " my ", " we " as words of a sentence; not "my-topic" nor "we're" in a quote.
FIRST_PERSON = re.compile(r"(?<![\w'`-])(?:I\s|(?:[Mm]y|[Ww]e)(?![\w'`-]))")
RUN_HISTORY = re.compile(r"\bstop \d+|\bissue \d+|\bCI saw\b", re.IGNORECASE)
TEST_NAME = re.compile(r"\btest_\w+\b(?!\.py)")  # a test's name; a file's name is fine
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(REPO)) for p in PROSE])
def test_the_prose_has_no_run_history_and_no_first_person(path: Path) -> None:
    where = path.relative_to(REPO)
    for number, line in enumerate(lines(path), start=1):
        assert not RUN_HISTORY.search(line), f"{where}:{number}: run history: {line}"
        assert not FIRST_PERSON.search(line), f"{where}:{number}: first person: {line}"


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(REPO)) for p in PROSE])
def test_relative_links_and_their_anchors_resolve(path: Path) -> None:
    where = path.relative_to(REPO)
    for target, anchor in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        linked = (path.parent / target) if target else path
        assert linked.exists(), f"{where}: no {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{where}: no heading #{anchor} in {target}"


def test_the_readme_and_docs_name_no_tests() -> None:
    for path in [README, *(REPO / "docs").glob("*.md")]:
        found = TEST_NAME.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(REPO)} names tests: {found}"


if __name__ == "__main__":
    for name, table in all_tables():
        print(f"<!-- {name} -->\n{table}")

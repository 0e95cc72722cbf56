"""A benchmark's report as data: tables of measured rows, and targets judged met or MISSED.

A scenario's `report(results)` returns a list of `Table`s; `render` prints them for the console
or as Markdown (BENCHMARKS.md's tables), and the JSON results carry the same rows.
"""

import operator
from dataclasses import asdict, dataclass, field, replace

OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


@dataclass
class Table:
    """`rows` of values, one per column; `columns` maps each header to its values' format spec."""

    title: str
    columns: dict[str, str]
    rows: list[tuple]
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [
            [cell(value, spec) for value, spec in zip(row, self.columns.values(), strict=True)] for row in self.rows
        ]


def cell(value, spec: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec and not isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Target:
    """A measure's target: `value OP limit`, shown with `unit` and the value's format `spec`."""

    measure: str
    op: str
    limit: float | bool
    unit: str = ""
    spec: str = ".2f"

    def named(self, *names) -> "Target":
        """This target with `names` filled into its measure's {}."""
        return replace(self, measure=self.measure.format(*names))

    def met(self, value) -> bool:
        return OPS[self.op](value, self.limit)

    def row(self, value, detail: str = "") -> tuple:
        result = cell(value, self.spec) + self.unit + (f" ({detail})" if detail else "")
        target = f"{self.op} {cell(self.limit)}{self.unit}"
        return self.measure, result, target, "met" if self.met(value) else "MISSED"


def targets(checks: list[tuple], title: str = "ratios and targets") -> Table:
    """The targets table of (Target, value) or (Target, value, detail) checks."""
    rows = [target.row(*rest) for target, *rest in checks]
    return Table(title, {"measure": "", "result": "", "target": "", "": ""}, rows)


def missed(table: Table) -> list[str]:
    """The measures of a targets table whose target was missed."""
    return [row[0] for row in table.rows if row[-1] == "MISSED"]


def console(table: Table) -> str:
    """Aligned columns: the first left, the others right."""
    lines = [list(table.columns), *table.cells()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(table.columns))]
    text = [f"\n== {table.title} =="]
    for line in lines:
        text.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )
    return "\n".join(text + [f"({note})" for note in table.notes])


def markdown(table: Table) -> str:
    headers = list(table.columns)
    text = [f"\n### {table.title}\n", "| " + " | ".join(headers) + " |"]
    text.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    text += ["| " + " | ".join(line) + " |" for line in table.cells()]
    return "\n".join(text + [f"\n{note}" for note in table.notes])


def render(tables: list[Table], as_markdown: bool = False) -> str:
    return "\n".join(map(markdown if as_markdown else console, tables))


def as_json(tables: list[Table]) -> list[dict]:
    return [asdict(table) for table in tables]

"""CSV cells a spreadsheet shows as text. Workflow, agent and model names are the callers' own text,
and a cell starting with "=", "+", "-", "@", a tab or a carriage return would open as a formula."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """`value`, with a leading apostrophe if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value

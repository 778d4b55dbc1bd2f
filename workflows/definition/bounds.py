"""The bounds of every number a team may send: money, counts, durations, ids and page sizes.

One place, so each bound is chosen once against the column that stores it (docs/api.md lists them):

- Money columns are numeric(18, 6), so at most 999,999,999,999.999999. A budget or a price is bounded
  far below that, so that spend past a budget stays representable too. A larger amount is never stored
  (PostgreSQL's column type and SQLite's guard triggers, workflows/ledger_triggers.py, refuse it).
- A report's total sums many rows and can pass 18 digits. Databases return sums unbounded (PostgreSQL's
  numeric; SQLite's float, which Django does not quantize for an aggregate), and the API renders money
  with up to MAX_SUM_DIGITS digits, so such a total is shown, never a 500.
- Counts and durations are PositiveIntegerField columns (at most 2**31 - 1 on PostgreSQL).
- Ids are BigAutoField (at most 2**63 - 1); a larger id names no row.
"""

from __future__ import annotations

from decimal import Decimal

# numeric(18, 6): the largest amount a money column holds.
MONEY_COLUMN_MAX = Decimal("999999999999.999999")
# A run's budget, a team's default or period budget: a thousandth of the column, so that a run or a period
# overshooting its budget by far is still stored and read exactly.
MAX_BUDGET_USD = Decimal("1000000000")
# USD per million tokens, in a workflow's cost.pricing or the price table. The dearest listed model costs
# hundreds; with token counts below 2**31 one ledger row stays below $10^8.
MAX_PRICE_PER_MTOK = Decimal("10000")
# USD an operator may price one call of a tool at: a paid API's call costs cents; a loop makes at most
# MAX_AGENT_ITERATIONS model calls, so a step's tool calls stay far below a money column.
MAX_TOOL_PRICE_USD = Decimal("10000")
# The most tokens of any kind one call may report, and the most a definition may ask for (max_tokens, a
# fake's mock counts): above any model's context window (the largest output cap in the price table is
# 128,000), far below 2**31 so that a count always fits the ledger's columns, and with
# MAX_PRICE_PER_MTOK a step's output estimate stays below $10^5.
MAX_CALL_TOKENS = 10_000_000
# Steps a run may execute before it stops with iteration_limit.
MAX_ITERATIONS = 500
# A run's active time limit: a year, far below the PositiveIntegerField column and timedelta's range.
MAX_TIMEOUT_SECONDS = 366 * 24 * 60 * 60
# Integer columns of counts (PositiveIntegerField): what PostgreSQL's integer holds.
MAX_COUNT_COLUMN = 2**31 - 1
# Row ids (BigAutoField) and workflow versions (PositiveIntegerField) a request may name.
MAX_ID = 2**63 - 1
MAX_VERSION = MAX_COUNT_COLUMN
# Digits of a rendered amount: Python's default decimal precision, room for ten billion rows at a column's maximum.
MAX_SUM_DIGITS = 28
# Rows per page of a list: ?page_size= is 1 to this.
MAX_PAGE_SIZE = 200
# What names an agent, step or group in a step's row, a checkpoint and a ledger entry (varchar(200)
# columns): a name, or inside sub-workflows its path (`research/search`), to which the ledger adds
# " (validator)" for a validator's call. A name alone is shorter, so that a path of a few levels fits.
MAX_NAME_CHARS = 100
MAX_PATH_CHARS = 200 - len(" (validator)")

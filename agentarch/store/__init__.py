"""The archive: the one data layer.

Every SQL statement lives here: the schema and its migrations, the writes (one transaction per record),
the pipeline's reads, the web's and the report's queries, and the ranking rules they sort by. Whatever
reads or writes the archive (the loop, the CLI, the web UI, few-shot selection) asks this package.

`Archive` (archive.py) is the one class a caller opens, composed of parts by job: schema, records, reads,
ledger, decisions and outcomes, on what handle.py gives them all. The read-only views for browsing and
reporting are module functions beside it, by what they serve: browse (the leaderboard, its filters and
search), lineage, run_progress, measurements (what charts plot and the predictor learns from) and
review_log. They write no SQL outside this package and build on three rules: which score is better for a
task (ranking.py: every ORDER BY and MAX over scores goes through its `sql_key`, so a lower-is-better
metric ranks lowest first), which evaluation a candidate's scores come from (scoring.SCORING_EVALUATION)
and what a listing row holds (`Archive.listing`, with the task's `metric` and `direction`). The indexes
these queries need are created by the schema's migrations (schema 6).

Each query is a fixed handful of statements whatever the archive's size, and every list pages with
LIMIT/OFFSET (`limit=None` means all), so pages stay fast on archives of tens of thousands of candidates.
Lists of ids travel as one JSON parameter (`json_each`), so their length never meets SQLite's cap on
placeholders.

May import: `agentarch.errors`, `agentarch.formats`, `agentarch.config`, and `agentarch.tasks` (its own
layer). Nothing above it.
"""

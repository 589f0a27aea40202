"""The web UI's routes, one module per kind of page: the leaderboard and search, a candidate (its page, lineage,
diffs, comparisons), the review queue and its decisions, runs and their plots, the Pareto page, the predictor page.

Each module's `routes(site)` returns its Starlette routes, their handlers closed over the `agentarch.web.site.Site`
that `agentarch.web.app.create_app` makes. Every list is paginated and each page is a fixed handful of queries, all
asked of the store (`Archive` and its query modules: `agentarch.store.browse`, `lineage`, `run_progress`, ...): no
page writes SQL, so a listing here ranks and scores exactly as the CLI, the report and few-shot selection do.
"""

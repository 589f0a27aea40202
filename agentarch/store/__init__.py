"""The archive: the one data layer.

Every SQL statement lives here: the schema and its migrations, the writes (one transaction per record),
the pipeline's reads, the web's and the report's queries, and the ranking rules they sort by. Whatever
reads or writes the archive (the loop, the CLI, the web UI, few-shot selection) asks this package.

May import: `agentarch.errors`, `agentarch.formats`, `agentarch.config`. Nothing above it.
"""

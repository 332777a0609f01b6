"""From Alertmanager to McpRemediation records: the receiver, the payload, the runbook
cache and ingestion."""

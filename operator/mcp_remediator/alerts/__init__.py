"""From Alertmanager to McpRemediation records: the receiver, the payload, ingestion and
guardrails."""

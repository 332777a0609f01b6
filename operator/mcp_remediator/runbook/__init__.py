"""The runbook language, checkable offline: matchers, templates, validation, guardrails."""

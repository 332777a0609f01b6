"""mcp-remediator: a Kopf operator that runs the MCP layer's runbooks safely and verifiably."""

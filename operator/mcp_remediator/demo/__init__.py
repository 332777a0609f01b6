"""``mcp-remediator demo``: the operations guide's incidents on an emulated MCP cluster."""

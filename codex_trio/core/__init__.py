"""The agent: the Responses-API model client, the turn loop, tools and approvals."""

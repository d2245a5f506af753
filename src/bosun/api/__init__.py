"""Wire types shared by the server, the client and the agent."""

"""The bosun server: ClearML's REST API over SQLite or PostgreSQL."""

"""The experiment on disk: creating its folder, the SQLite store (the only code that speaks SQL) and
the driver lock.
May import: config, core, sqlite-utils."""

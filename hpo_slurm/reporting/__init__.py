"""Everything that shows a search: status tables, live views, logs, plots, the HTML report, exports.
Reads the store and the experiment folder, never writes the store. May import: experiment, config, core, rich."""

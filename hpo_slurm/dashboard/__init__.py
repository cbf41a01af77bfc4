"""``hpo-slurm dashboard``: a read-only web UI over every experiment under a root, live while drivers
run. A Starlette application (app.py) behind a token gate (gate.py), served by uvicorn (server.py);
what the pages show is read by experiment_reads.py and trial_reads.py; the pages (pages/: one shell
and each page's body) and every asset they use (static/) ship in the package: no CDN, no network.
May import: reporting, experiment, config, core, and its optional extra's libraries (starlette,
uvicorn). Never engine, executors, searchers or sweep: it only reads."""

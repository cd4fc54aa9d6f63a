"""`echovids eval`: the quality instrument of issue 7 (ESC-10 recordings, degradations, metrics, report).

It measures a running Echovids through its public HTTP API, or (``--offline``) the services' own code in this
process. It sits above the services and the shared package (``echovids/`` never imports it). Modules:

- :mod:`~evaluation.dataset`: ESC-10 clips, the 60 s recordings joined from them and their ground truth
- :mod:`~evaluation.degrade`: noise at an SNR, band-limiting, reverb, the opus/webm round trip
- :mod:`~evaluation.metrics`: precision@k, average precision, timestamped hits, percentiles
- :mod:`~evaluation.client`: library ingest and timed searches over HTTP
- :mod:`~evaluation.suites`: the three suites (exact, similar, clips) and the JSON/Markdown report
- :mod:`~evaluation.offline`: the same client calls answered by the services' code in this process
"""

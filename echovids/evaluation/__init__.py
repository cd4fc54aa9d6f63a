"""`echovids eval`: the quality instrument of issue 7 (ESC-10 recordings, degradations, metrics, report).

It measures a running Echovids through its public HTTP API only. Modules:

- :mod:`~echovids.evaluation.dataset`: ESC-10 clips, the 60 s recordings joined from them and their ground truth
- :mod:`~echovids.evaluation.degrade`: noise at an SNR, band-limiting, reverb, the opus/webm round trip
- :mod:`~echovids.evaluation.metrics`: precision@k, average precision, timestamped hits, percentiles
- :mod:`~echovids.evaluation.client`: library ingest and timed searches over HTTP
- :mod:`~echovids.evaluation.suites`: the three suites (exact, similar, clips) and the JSON/Markdown report
"""

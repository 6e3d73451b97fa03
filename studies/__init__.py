"""One-off studies: scripts that answered one question about this project once (studies/README.md).

The harness a user runs on their own engines and models is ``benchmarks/``; a study may import from it
(helpers, report renderers), never the reverse. Results go to ``benchmarks/results/`` beside the
benchmarks', where ``benchmarks/report.py`` renders them.
"""

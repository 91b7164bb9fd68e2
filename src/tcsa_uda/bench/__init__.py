"""bench stage of tcsa-uda: run a suite of trainings x datasets x directions x seeds and compare them.

``suite`` (the typed suite file and its cells), ``runner`` (every cell as subprocesses of the
command line: resumable, parallel, failures recorded) and ``report`` (``bench.csv``, ``bench.md``,
``bench.tex``, ``bench.png`` with paired confidence intervals). Command: ``tcsa-uda bench``.
"""

"""What jobs write: image grids, JSON summaries, markdown reports, plots.

* `reports.inversion`: an inversion's PNGs, arrays, grid, loss plot and
  summary.
* `reports.leakage`: the Table-1 report and its figures.
* `reports.evaluation`: the evaluate job's report, grid and Fig. 9 plot.
* `reports.audit`: the audit's HTML report, verdicts and charts.
* `reports.outputs`: what they all share (uint8 images, strict JSON,
  matplotlib on the file-only backend).
"""
